"""Evaluation: per case and structure Dice, ASSD, HD95, surface Dice; CSV + the paper's summary table."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers.structures import OUTPUT_LABELS

from .metrics import all_metrics

FIELDS = ("case", "structure", "dice", "assd", "hd95", "surface_dice", "fold")


def evaluate_labels(pred: np.ndarray, gt: np.ndarray, spacing_kji, case: str, tolerance_mm: float = 2.0) -> list[dict]:
    """Metric rows of one case for every output label (ABCs values in both maps)."""
    rows = []
    for lab in OUTPUT_LABELS:
        rows.append({"case": case, "structure": lab.key,
                     **all_metrics(pred == lab.value, gt == lab.value, spacing_kji, tolerance_mm)})
    return rows


def _mean(values) -> float:
    v = [x for x in values if not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else float("nan")


def summary_table(rows: list[dict]) -> str:
    """The paper's layout: one row per structure and the average, Dice % / ASSD mm (plus HD95, NSD)."""
    lines = [f"{'Structure':<14} {'Dice %':>7} {'ASSD mm':>8} {'HD95 mm':>8} {'NSD@2mm %':>10}"]
    means = []
    for lab in OUTPUT_LABELS:
        sel = [r for r in rows if r["structure"] == lab.key]
        if not sel:
            continue
        m = [_mean(r[k] for r in sel) for k in ("dice", "assd", "hd95", "surface_dice")]
        means.append(m)
        lines.append(f"{lab.key:<14} {100 * m[0]:7.1f} {m[1]:8.3f} {m[2]:8.2f} {100 * m[3]:10.1f}")
    if means:
        avg = [_mean(col) for col in zip(*means)]
        lines.append(f"{'average':<14} {100 * avg[0]:7.1f} {avg[1]:8.3f} {avg[2]:8.2f} {100 * avg[3]:10.1f}")
    return "\n".join(lines)


def write_results(rows: list[dict], out: Path) -> str:
    """Write metrics.csv and summary.txt into ``out``; returns the summary table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[f for f in FIELDS if any(f in r for r in rows)])
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in FIELDS if k in r})
    table = summary_table(rows)
    (out / "summary.txt").write_text(table + "\n")
    return table


def evaluate_cached(cache: Path, workdir: Path, cases: list[str] | None = None, gt_boxes: bool = False,
                    tolerance_mm: float = 2.0, progress: bool = True) -> list[dict]:
    """Segment prepared cases with a training folder's networks and score them on the model grid."""
    import torch
    from tqdm import tqdm

    from .infer import load_trained, segment_case, to_output_labels
    from .prepare import load_case, load_index
    from .stages import select_entries

    index = load_index(cache)
    entries = select_entries(index, cases)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    coarse, fine = load_trained(workdir, device=device)
    if not fine:
        raise FileNotFoundError(f"no trained fine networks in {workdir}/fine")
    spacing = tuple(float(s) for s in index["spacing"])[::-1]
    rows = []
    for entry in tqdm(entries, desc="evaluate", disable=not progress):
        pred = to_output_labels(segment_case(cache, index, entry, coarse, fine, device, gt_boxes=gt_boxes))
        _, gt = load_case(cache, entry)
        rows += evaluate_labels(pred, to_output_labels(gt), spacing, entry["case"], tolerance_mm)
    return rows


def evaluate_files(pairs: list[tuple[str, Path, Path]], tolerance_mm: float = 2.0) -> list[dict]:
    """Score label-map files (case, prediction, ground truth) on the ground truth's grid."""
    rows = []
    for case, pred_path, gt_path in pairs:
        gt = sitk.ReadImage(str(gt_path))
        pred = sitk.ReadImage(str(pred_path))
        if pred.GetSize() != gt.GetSize() or not np.allclose(pred.GetSpacing(), gt.GetSpacing(), rtol=1e-3):
            pred = sitk.Resample(pred, gt, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        spacing = tuple(gt.GetSpacing())[::-1]
        rows += evaluate_labels(sitk.GetArrayFromImage(pred), sitk.GetArrayFromImage(gt), spacing, case, tolerance_mm)
    return rows
