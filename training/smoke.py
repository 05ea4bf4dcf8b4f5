"""The smoke gate: phantoms -> prepare -> coarse + six fine networks (smoke recipe) -> export ->
evaluation of held-out phantoms through the shipped pipeline.

``python -m brainbarriers_training smoke`` runs it and prints the figures; the slow test asserts the thresholds
and ``bench/smoke_spread.py`` measures their spread over seeds and thread counts.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from .config import load_config
from .evaluate import evaluate_model, indexed_cases, summary_table
from .export import export_bundle
from .phantom import generate_dataset
from .prepare import prepare
from .stages import train_coarse, train_fine

#: Mean Dice over the held-out phantoms that the gate requires (plump >= 0.9, thin >= 0.7).
THRESHOLDS = {"cerebellum": 0.9, "ventricles": 0.9, "falx": 0.7, "sinuses": 0.7, "tentorium": 0.7}
#: The false-negative weighting (theta 3.0-3.5 for these sheets) must show: on average they are
#: predicted slightly larger than they are. Measured (held-out mean of predicted/true volume):
#: intact recipe 1.033-1.051 over seeds 7, 1, 2, 3; theta ignored (plain Dice) 0.986.
FN_WEIGHTED = ("falx", "sinuses", "tentorium")
MIN_FN_VOLUME_RATIO = 1.01
DATA_SEED = 21
TRAIN_IDS = [f"{i:03d}" for i in range(1, 13)]
HELD_OUT = ["013", "014", "015"]


def cpu_name() -> str:
    """The CPU model (figures name the machine they were measured on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_smoke(workdir: Path, seed: int | None = None, overrides: list[str] | None = None) -> tuple[list[dict], dict]:
    """Train the smoke recipe on phantoms 001-012 and score 013-015; returns (metric rows, facts)."""
    import torch

    workdir = Path(workdir)
    t0 = time.time()
    config = load_config("smoke", (overrides or []) + ([f"seed={seed}"] if seed is not None else []))
    generate_dataset(workdir / "data", len(TRAIN_IDS) + len(HELD_OUT), seed=DATA_SEED)
    index = prepare(workdir / "data", workdir / "cache", config["data"], progress=False)
    train_coarse(config, workdir / "cache", workdir / "run", TRAIN_IDS)
    fine = train_fine(config, workdir / "cache", workdir / "run", cases=TRAIN_IDS)
    bundle = export_bundle(workdir / "run", workdir / "bundle")
    t_train = time.time() - t0
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    rows = evaluate_model(bundle, indexed_cases(index, HELD_OUT), device="cpu", progress=False)
    facts = {"seed": config["seed"], "threads": torch.get_num_threads(), "train_s": round(t_train),
             "eval_s": round(time.time() - t0 - t_train), "cpu": cpu_name(), "cores": os.cpu_count(),
             "fine_checks": {k: v.get("check") for k, v in fine.items()}, "method": method_problems(manifest)}
    return rows, facts


def mean_dice(rows: list[dict]) -> dict[str, float]:
    return {k: sum(r["dice"] for r in rows if r["structure"] == k) / max(1, sum(r["structure"] == k for r in rows))
            for k in THRESHOLDS}


def method_problems(manifest: dict) -> list[str]:
    """Where an exported bundle is not the paper's method: an HMRNet-s target whose inter-slice axis
    is not the structure table's thin direction, or BFC blocks removed. On the smoke phantoms neither
    costs Dice beyond the spread over seeds (measured), so the gate checks the bundle itself; the
    unit tests check the code behind them (BFC by hand, the -s receptive field per axis)."""
    from brainbarriers.bundles import fine_network
    from brainbarriers.structures import fine_target

    out = []
    for key, spec in manifest["networks"]["fine"].items():
        target = fine_target(key)
        options = spec.get("options", {})
        if options.get("calibration") is False:
            out.append(f"{key}: BFC blocks removed")
        if spec["architecture"] == "hmrnet-s" and target.slice_axis is not None:
            expected = fine_network(target)["options"]["inter_slice_axis"]  # the table's axis on the model grid
            if options.get("inter_slice_axis", expected) != expected or spec.get("slice_axis") != target.slice_axis:
                out.append(f"{key}: inter-slice axis {spec.get('slice_axis')} is not its thin direction {target.slice_axis}")
    return out


def fn_volume_ratio(rows: list[dict]) -> float:
    """Mean predicted/true volume of the strongly fn-weighted sheets over the held-out cases."""
    ratios = [r["volume_pred_ml"] / r["volume_true_ml"] for r in rows
              if r["structure"] in FN_WEIGHTED and r["volume_true_ml"] > 0]
    return sum(ratios) / len(ratios) if ratios else 0.0


def failures(rows: list[dict]) -> list[str]:
    """What fails the gate, as messages (empty when it passes): a structure below its Dice threshold,
    or fn-weighted sheets that are not predicted larger on average (the weighting had no effect)."""
    out = [f"{k}: mean Dice {v:.3f} < {THRESHOLDS[k]}" for k, v in mean_dice(rows).items() if v < THRESHOLDS[k]]
    ratio = fn_volume_ratio(rows)
    if ratio < MIN_FN_VOLUME_RATIO:
        out.append(f"{'/'.join(FN_WEIGHTED)}: predicted/true volume {ratio:.3f} < {MIN_FN_VOLUME_RATIO} "
                   "(the false-negative weighting shows no effect)")
    return out


def report(rows: list[dict], facts: dict) -> str:
    head = (f"smoke gate: recipe seed {facts['seed']}, {facts['threads']} torch threads, {facts['cpu']} "
            f"({facts['cores']} cores); training {facts['train_s']} s, evaluation {facts['eval_s']} s; "
            f"held-out phantoms {', '.join(HELD_OUT)} through the exported bundle")
    return (head + "\n" + summary_table(rows) + f"\nfn-weighted sheets ({', '.join(FN_WEIGHTED)}): mean predicted/true "
            f"volume {fn_volume_ratio(rows):.3f} (gate >= {MIN_FN_VOLUME_RATIO})")
