"""``compare``: the paper's Table VI for any set of networks.

Every network is cross-validated on the same folds (``crossval.cross_validate``: the folds depend
only on the case ids and the recipe's seed) into workdir/<network>, each fold scored through the
shipped pipeline on its exported bundle; a network whose workdir/<network>/evaluation/metrics.csv
exists is not run again (resumable, one run per network). "hmrnet" is the recipe as it is; any
other name replaces every fine network (plump and thin) by that architecture, trained with Dice +
CE as the paper trained its baselines (HMEDN with its own loss, FocusNet/FocusNetv2 with theirs).
The coarse stage is the recipe's in every run. ``NAME:one-stage`` (e.g. ``unet3d:one-stage``) is
Table VI's one-stage baseline instead: NAME alone on the whole head (``network_recipe``), in
workdir/NAME-one-stage.

Output in workdir: compare.csv, compare.md (Dice and ASSD per structure, mean ± std over the cases,
their averages, paired t-test p-values of the per-case averages against the reference) and
compare.png (per-case average Dice per network).
"""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import numpy as np
from brainbarriers.structures import FINE_TARGETS, OUTPUT_LABELS, FineTarget

#: Fine-stage loss of each comparison network (default: Dice + CE, the paper's baselines' loss).
NETWORK_LOSSES = {"hmedn": "hmedn", "focusnet": "focusnet", "focusnetv2": "focusnet"}
REFERENCE = "hmrnet"


ONE_STAGE_SUFFIX = ":one-stage"


def network_recipe(config: dict, network: str, options: dict | None = None) -> dict:
    """The recipe with ``network`` as every fine network ("hmrnet": the recipe unchanged).

    ``NAME:one-stage`` (Table VI's one-stage baselines): NAME alone segments every structure on the
    whole head at the model spacing (recipe ``"mode": "one-stage"``), with Dice + CE, trained on
    random windows of the fine stage's ``max_crop``."""
    from brainbarriers.networks import ZOO

    cfg = copy.deepcopy(config)
    if network.endswith(ONE_STAGE_SUFFIX):
        name = network[: -len(ONE_STAGE_SUFFIX)]
        if name not in ZOO:
            raise ValueError(f"unknown network {name!r} in {network!r}; choose from {', '.join(ZOO)}")
        cfg["mode"] = "one-stage"
        cfg["coarse"] = {**cfg.get("coarse", {}), "architecture": name, "options": dict(options or {}),
                         "loss": {"name": "dice_ce"}, "patch_size": list(cfg.get("fine", {}).get("max_crop", [128] * 3))}
        return cfg
    if network == REFERENCE:
        return cfg
    if network not in ZOO:
        raise ValueError(f"unknown network {network!r}; choose from {', '.join((REFERENCE,) + ZOO)}")
    cfg["fine"]["networks"] = {v: {"architecture": network, "options": dict(options or {})} for v in ("p", "s")}
    cfg["fine"]["loss"] = {**cfg["fine"].get("loss", {}), "name": NETWORK_LOSSES.get(network, "dice_ce")}
    return cfg


def compare(config: dict, cache: Path, workdir: Path, networks: list[str], folds: int = 5,
            cases: list[str] | None = None, resume: bool = True, options: dict[str, dict] | None = None,
            targets: tuple[FineTarget, ...] = FINE_TARGETS) -> str:
    """Cross-validate every network on the same folds and write the comparison; returns the Markdown."""
    from .crossval import cross_validate

    workdir = Path(workdir)
    options = options or {}
    recipes = {n: network_recipe(config, n, options.get(n, options.get(n.split(":")[0])))  # unknown names fail first
               for n in networks}
    results = {}
    for name in networks:
        folder = workdir / run_folder(name)
        metrics = folder / "evaluation" / "metrics.csv"
        if not (resume and metrics.exists()):
            cross_validate(recipes[name], cache, folder, folds, cases, resume, targets)
        results[name] = read_metrics(metrics)
    rows = table_vi(results, REFERENCE if REFERENCE in results else None)
    md = write_compare(rows, workdir)
    write_figure(results, workdir / "compare.png")
    return md


def run_folder(network: str) -> str:
    """The work folder name of one compared network ("unet3d:one-stage" -> "unet3d-one-stage")."""
    return network.replace(":", "-")


def read_metrics(path: Path) -> list[dict]:
    """The rows of an ``evaluate`` metrics.csv with Dice and ASSD as floats."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("dice", "assd"):
            r[k] = float(r[k]) if r.get(k) not in (None, "") else float("nan")
    return rows


def _per_case(rows: list[dict], metric: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        v = float(r[metric])
        out.setdefault(str(r["case"]), {})[str(r["structure"])] = v
    return out


def case_averages(rows: list[dict], metric: str) -> dict[str, float]:
    """Per case, the mean of ``metric`` over the structures that have a finite value."""
    res = {}
    for case, by_structure in _per_case(rows, metric).items():
        vals = [v for v in by_structure.values() if math.isfinite(v)]
        res[case] = float(np.mean(vals)) if vals else float("nan")
    return res


def paired_p(a: dict[str, float], b: dict[str, float]) -> float:
    """Two-sided paired t-test over the cases both have (finite); nan with fewer than two pairs."""
    from scipy.stats import ttest_rel

    cases = sorted(c for c in set(a) & set(b) if math.isfinite(a[c]) and math.isfinite(b[c]))
    if len(cases) < 2:
        return float("nan")
    x, y = np.array([a[c] for c in cases]), np.array([b[c] for c in cases])
    if np.allclose(x, y):
        return 1.0
    return float(ttest_rel(x, y).pvalue)


def _ms(values) -> tuple[float, float]:
    v = np.array([x for x in values if math.isfinite(x)], dtype=float)
    if not v.size:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def table_vi(results: dict[str, list[dict]], reference: str | None = "hmrnet") -> list[dict]:
    """One row per network: {structure}_dice/_assd as (mean, std), average_dice/_assd, p_dice/p_assd."""
    keys = [lab.key for lab in OUTPUT_LABELS]
    ref_dice = case_averages(results[reference], "dice") if reference in results else None
    ref_assd = case_averages(results[reference], "assd") if reference in results else None
    rows = []
    for name, rows_n in results.items():
        row: dict = {"network": name}
        for metric in ("dice", "assd"):
            per_case = _per_case(rows_n, metric)
            for k in keys:
                row[f"{k}_{metric}"] = _ms(per_case[c].get(k, float("nan")) for c in per_case)
            row[f"average_{metric}"] = _ms(case_averages(rows_n, metric).values())
        if ref_dice is not None and name != reference:
            row["p_dice"] = paired_p(case_averages(rows_n, "dice"), ref_dice)
            row["p_assd"] = paired_p(case_averages(rows_n, "assd"), ref_assd)
        else:
            row["p_dice"] = row["p_assd"] = float("nan")
        rows.append(row)
    return rows


def _fmt(ms: tuple[float, float], scale: float, digits: int) -> str:
    m, s = ms
    return "-" if not math.isfinite(m) else f"{scale * m:.{digits}f}±{scale * s:.{digits}f}"


def write_compare(rows: list[dict], out: Path) -> str:
    """compare.csv (numbers), compare.md (the paper's layout) and compare.png; returns the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = [lab.key for lab in OUTPUT_LABELS] + ["average"]
    with open(out / "compare.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["network"] + [f"{k}_{m}_{s}" for m in ("dice", "assd") for k in keys for s in ("mean", "std")]
                   + ["p_dice", "p_assd"])
        for r in rows:
            w.writerow([r["network"]] + [f"{v:.6g}" for m in ("dice", "assd") for k in keys for v in r[f"{k}_{m}"]]
                       + [f"{r['p_dice']:.4g}", f"{r['p_assd']:.4g}"])
    head = "| Method | " + " | ".join(f"Dice % {k}" for k in keys) + " | " + " | ".join(f"ASSD mm {k}" for k in keys)
    head += " | p (avg Dice) | p (avg ASSD) |"
    lines = [head, "|" + "---|" * (2 * len(keys) + 3)]
    for r in rows:
        cells = [_fmt(r[f"{k}_dice"], 100, 1) for k in keys] + [_fmt(r[f"{k}_assd"], 1, 3) for k in keys]
        ps = ["-" if not math.isfinite(r[p]) else f"{r[p]:.4f}" for p in ("p_dice", "p_assd")]
        lines.append(f"| {r['network']} | " + " | ".join(cells) + " | " + " | ".join(ps) + " |")
    md = "\n".join(lines) + "\n"
    (out / "compare.md").write_text(md, encoding="utf-8")
    return md


def write_figure(results: dict[str, list[dict]], path: Path) -> None:
    """Box plot of the per-case average Dice of every network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    data = [[v for v in case_averages(results[n], "dice").values() if math.isfinite(v)] for n in names]
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(names), 3.5))
    ax.boxplot([[100 * v for v in d] for d in data], tick_labels=names)
    ax.set_ylabel("average Dice per case (%)")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
