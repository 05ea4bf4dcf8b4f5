"""``finetune``: adapt a model bundle to a site's corrected cases, and refuse when it does not help.

Starting from the parent bundle's coarse and fine weights (and its grids, normalisation and network
shapes), every network is trained for the recipe's short ``finetune`` schedule at a fraction of its
learning rate on the site cases collected with ``brainbarriers collect``, minus a held-out fraction.
The held-out cases are then segmented through the shipped pipeline with the parent and with the
candidate; the candidate is exported as a new version of the parent's id, whose manifest names its
parent (id, version, SHA-256) and the site cases it saw, only when its mean held-out Dice is not
below the parent's (plus the recipe's ``min_gain``). Otherwise ``FinetuneRefused`` is raised and no
bundle is written.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from brainbarriers.structures import fine_target


class FinetuneRefused(Exception):
    """The fine-tuned networks are worse than the parent on the held-out site cases (nothing exported)."""


@dataclass
class FinetuneResult:
    bundle: Path
    parent_dice: float
    candidate_dice: float
    trained_on: list[str]
    held_out: list[str]


def finetune_settings(config: dict) -> dict:
    """The recipe's ``finetune`` section (paper.json holds every key; recipes change some)."""
    return dict(config["finetune"])


def holdout_split(cases: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training cases, held-out cases): at least one of each, chosen by a seeded shuffle."""
    if len(cases) < 2:
        raise ValueError(f"fine-tuning needs at least 2 site cases (one is held out); found {len(cases)}")
    order = [cases[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    held = min(len(cases) - 1, max(1, int(round(fraction * len(cases)))))
    return sorted(order[held:]), sorted(order[:held])


def child_version(parent_version: str) -> str:
    """The parent's version with a ``+site.N`` local part, N one more than the parent's own."""
    base, _, local = parent_version.partition("+")
    m = re.fullmatch(r"site\.(\d+)", local)
    return f"{base}+site.{int(m[1]) + 1 if m else 1}"


def config_for_parent(recipe: dict, manifest: dict) -> dict:
    """The recipe with everything the parent fixes taken from its manifest (grids, normalisation,
    network shapes, margins) and the short fine-tuning schedule in both stages."""
    if manifest.get("mode") == "one-stage":
        raise ValueError(f"model {manifest.get('id')} is one-stage; finetune adapts two-stage (HMRNet) models only")
    config = copy.deepcopy(recipe)
    nets = manifest["networks"]
    data = config.setdefault("data", {})
    data["spacing"] = list(manifest["spacing"])
    data["coarse_spacing"] = list(nets["coarse"].get("spacing", manifest["spacing"]))
    data["normalisation"] = copy.deepcopy(manifest.get("normalisation", {}))
    config["coarse"]["architecture"] = nets["coarse"]["architecture"]
    config["coarse"]["options"] = dict(nets["coarse"].get("options", {}))
    margins = set()
    for key, spec in nets["fine"].items():
        options = {k: v for k, v in spec.get("options", {}).items() if k != "inter_slice_axis"}
        config["fine"]["networks"][fine_target(key).variant] = {"architecture": spec["architecture"], "options": options}
        if spec.get("max_crop"):
            config["fine"]["max_crop"] = list(spec["max_crop"])
        margins.add(int(spec.get("margin", fine_target(key).margin)))
    config["fine"]["margin"] = margins.pop() if len(margins) == 1 else "table"
    ft = finetune_settings(recipe)
    for stage in ("coarse", "fine"):
        section = config[stage]
        optimizer = copy.deepcopy(section.get("optimizer") or config["train"]["optimizer"])
        optimizer["lr"] = float(optimizer["lr"]) * float(ft["lr_factor"])
        section.update({"epochs": int(ft["epochs"]), "iterations_per_epoch": int(ft["iterations_per_epoch"]),
                        "optimizer": optimizer})
    # no coarse-checkpoint boxes: the fine networks train on ground-truth boxes (plus the margin)
    config["coarse"]["box_checkpoints"] = []
    config["fine"]["box_source"] = "ground_truth"
    from .config import as_recipe

    checked = as_recipe(config, "fine-tuning recipe").to_dict()  # checked key by key
    # the recipe's defaults fill options the parent's manifest leaves out (an activation, say): those
    # must stay the network's own defaults, or the fine-tuned weights would run in another network
    _pin_options(checked["coarse"], nets["coarse"]["architecture"], nets["coarse"].get("options", {}))
    for key, spec in nets["fine"].items():
        _pin_options(checked["fine"]["networks"][fine_target(key).variant], spec["architecture"],
                     {k: v for k, v in spec.get("options", {}).items() if k != "inter_slice_axis"})
    return checked


def _pin_options(section: dict, architecture: str, parent_options: dict) -> None:
    """Set ``section["options"]`` to the parent's, each option it leaves out at the network's default."""
    import inspect

    from brainbarriers.networks import CoarseUNet, HMRNet

    signature = inspect.signature(CoarseUNet if architecture == "coarse-unet" else HMRNet).parameters
    options = dict(parent_options)
    for key in section.get("options", {}):
        if key not in options and key in signature:
            options[key] = signature[key].default
    section["options"] = options


def merged_volume_stats(parent: dict | None, site: dict) -> dict:
    """The parent's training volume ranges widened by the site cases' volumes."""
    out = copy.deepcopy(parent or {})
    for key, s in site.items():
        p = out.get(key)
        if p is None:
            out[key] = s
            continue
        n = p["cases"] + s["cases"]
        merged = {"cases": n, "min_ml": min(p["min_ml"], s["min_ml"]), "max_ml": max(p["max_ml"], s["max_ml"])}
        if "mean_ml" in p and "mean_ml" in s:
            merged["mean_ml"] = round((p["mean_ml"] * p["cases"] + s["mean_ml"] * s["cases"]) / n, 3)
        out[key] = merged
    return out


def child_manifest(parent, version: str, trained_on: list[str], held_out: list[str], data: Path, recipe_name: str,
                   scores: dict, volume_stats: dict) -> dict:
    """The parent's manifest as a new version that records its lineage and the site data it saw."""
    from .export import _code_version

    manifest = {k: copy.deepcopy(v) for k, v in parent.manifest.items() if k not in ("files", "model_card")}
    manifest["version"] = version
    manifest["description"] = (f"{parent.manifest.get('description', '')} Fine-tuned on {len(trained_on)} site cases "
                               f"from {parent.id}@{parent.version}.").strip()
    manifest["parent"] = {"id": parent.id, "version": parent.version, "sha256": parent.sha256}
    # fine-tuning trains one network per target, from the parent's first: an ensemble's other members
    # were not trained on the site and are not carried over
    for spec in manifest["networks"]["fine"].values():
        spec.pop("ensemble", None)
    manifest["training"] = {
        **manifest.get("training", {}),
        "data": f"site data {data} (fine-tuning)", "recipe": f"{recipe_name} (finetune)",
        "code_version": _code_version(), "date": datetime.date.today().isoformat(),
        "cases": trained_on, "case_count": len(trained_on), "held_out_cases": held_out,
        "held_out_dice": scores,
    }
    manifest["volume_stats"] = volume_stats
    manifest["timings"] = {"cpu_s": None, "gpu_s": None}
    return manifest


def mean_dice(rows: list[dict], structures: set[str]) -> float:
    """Mean Dice over the held-out cases and the structures the model segments."""
    values = [r["dice"] for r in rows if r["structure"] in structures and not np.isnan(r["dice"])]
    return float(np.mean(values)) if values else float("nan")


def finetune(parent_ref: str | Path, data: Path, out: Path, recipe: dict, workdir: Path | None = None,
             version: str | None = None, device: str = "auto", progress: bool = False) -> FinetuneResult:
    """Fine-tune ``parent_ref`` on ``data`` and write the new bundle to ``out`` (see the module doc)."""
    from brainbarriers.bundles import load_bundle, write_bundle
    from brainbarriers.structures import FINE_TARGETS, output_label
    from safetensors.torch import load_file

    from .config import stage_config
    from .engine import FINAL, load_weights, train
    from .evaluate import evaluate_model, labelled_cases
    from .export import training_volume_stats
    from .prepare import prepare

    parent = load_bundle(parent_ref)
    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} already exists; choose a new --out folder")
    workdir = Path(workdir) if workdir else out.with_name(out.name + "-work")
    ft = finetune_settings(recipe)
    config = config_for_parent(recipe, parent.manifest)

    cache = workdir / "cache"
    index = prepare(Path(data), cache, config["data"], progress=progress)
    for problem in index["problems"]:
        print(f"site case {problem['case']} skipped: {problem['problem']}")
    trained_on, held_out = holdout_split([e["case"] for e in index["cases"]], float(ft["holdout_fraction"]), int(ft["seed"]))
    entries = [e for e in index["cases"] if e["case"] in trained_on]

    def parent_state(spec: dict) -> dict:  # the bundle's files were checked against their SHA-256 on loading
        return load_file(str(parent.path / spec["file"]))

    nets = parent.manifest["networks"]
    train(config, stage_config(config, "coarse"), cache, entries, workdir / "coarse", None,
          spacing=index["coarse_spacing"], resume=False, init_weights=parent_state(nets["coarse"]))
    targets = [t for t in FINE_TARGETS if t.key in parent.structures]
    for t in targets:
        train(config, stage_config(config, "fine"), cache, entries, workdir / "fine" / t.key, t,
              spacing=index["spacing"], resume=False, init_weights=parent_state(nets["fine"][t.key]))

    states = {nets["coarse"]["file"]: load_weights(workdir / "coarse" / FINAL)}
    for t in targets:
        states[nets["fine"][t.key]["file"]] = load_weights(workdir / "fine" / t.key / FINAL)
    version = version or child_version(parent.version)
    site_stats = training_volume_stats(cache, trained_on)
    candidate_dir = workdir / "candidate"
    shutil.rmtree(candidate_dir, ignore_errors=True)
    manifest = child_manifest(parent, version, trained_on, held_out, Path(data), str(recipe.get("name", "")), {},
                              merged_volume_stats(parent.manifest.get("volume_stats"), site_stats))
    candidate = load_bundle(write_bundle(candidate_dir, manifest, states))

    cases = labelled_cases(Path(data), held_out)
    structures = {output_label(t.label).key for t in targets}
    before = mean_dice(evaluate_model(parent, cases, device, progress=progress), structures)
    after = mean_dice(evaluate_model(candidate, cases, device, progress=progress), structures)
    scores = {"parent": round(before, 4), "fine_tuned": round(after, 4), "cases": len(held_out)}
    (workdir / "held_out.json").write_text(json.dumps({"held_out": held_out, **scores}, indent=1))
    if not after >= before + float(ft["min_gain"]):
        raise FinetuneRefused(
            f"the fine-tuned model is worse than {parent.id}@{parent.version} on the {len(held_out)} held-out site "
            f"cases (mean Dice {after:.3f} vs {before:.3f}); no bundle was written (details: {workdir / 'held_out.json'})")
    manifest["training"]["held_out_dice"] = scores
    write_bundle(out, manifest, states)
    return FinetuneResult(out, before, after, trained_on, held_out)
