"""Evaluation through the shipped pipeline: per case and structure Dice, ASSD, HD95, surface Dice.

``evaluate_model`` runs ``brainbarriers.pipeline.Segmenter`` on a model bundle (the code
``brainbarriers segment`` and the Slicer module run) over the original image files of each case and
scores its labels on the case's own grid against the label map. ``write_results`` writes
``metrics.csv`` and the paper's Table VI layout (mean ± std per structure and the average).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers.structures import MODALITIES, OUTPUT_LABELS

from .metrics import all_metrics

FIELDS = ("case", "structure", "dice", "assd", "hd95", "surface_dice", "outcome", "volume_pred_ml",
          "volume_true_ml", "fold")


def evaluate_labels(pred: np.ndarray, gt: np.ndarray, spacing_kji, case: str, tolerance_mm: float = 2.0,
                    structures: Sequence[str] | None = None) -> list[dict]:
    """Metric rows of one case for every output label (ABCs values in both maps, one grid).

    ``structures`` (output label keys) limits the scoring to the structures the label map really
    labels; a structure it leaves out would otherwise score as a "false structure".
    """
    voxel_ml = float(np.prod(spacing_kji)) / 1000.0
    unknown = set(structures or ()) - {lab.key for lab in OUTPUT_LABELS}
    if unknown:
        raise ValueError(f"unknown structure {sorted(unknown)[0]!r}; choose from "
                         f"{', '.join(lab.key for lab in OUTPUT_LABELS)}")
    rows = []
    for lab in OUTPUT_LABELS:
        if structures and lab.key not in structures:
            continue
        p, g = pred == lab.value, gt == lab.value
        rows.append({"case": case, "structure": lab.key, **all_metrics(p, g, spacing_kji, tolerance_mm),
                     "volume_pred_ml": float(p.sum()) * voxel_ml, "volume_true_ml": float(g.sum()) * voxel_ml})
    return rows


def _finite(values) -> list[float]:
    return [float(x) for x in values if not (isinstance(x, float) and math.isnan(x))]


def _mean_std(values) -> tuple[float, float]:
    v = _finite(values)
    return (float(np.mean(v)), float(np.std(v))) if v else (float("nan"), float("nan"))


def summary_table(rows: list[dict]) -> str:
    """The paper's Table VI layout: per structure and the average, mean ± std of Dice % and ASSD mm
    (plus HD95 and surface Dice), and how many structures were missed or false."""
    lines = [f"{'Structure':<12} {'Dice %':>13} {'ASSD mm':>15} {'HD95 mm':>15} {'NSD@2mm %':>13} {'misses':>6}"]
    per_case: dict[str, list[dict]] = {}
    for lab in OUTPUT_LABELS:
        sel = [r for r in rows if r["structure"] == lab.key]
        if not sel:
            continue
        per_case[lab.key] = sel
        lines.append(_row(lab.key, sel))
    if per_case:  # the average over structures, per case, then mean ± std over cases
        cases = sorted({r["case"] for sel in per_case.values() for r in sel})
        avg = []
        for c in cases:
            rs = [r for sel in per_case.values() for r in sel if r["case"] == c]
            avg.append({k: float(np.mean(_finite(r[k] for r in rs) or [float("nan")]))
                        for k in ("dice", "assd", "hd95", "surface_dice")})
        lines.append(_row("average", avg, count_misses=False))
    return "\n".join(lines)


def _row(name: str, rows: list[dict], count_misses: bool = True) -> str:
    d, a, h, n = (_mean_std(r[k] for r in rows) for k in ("dice", "assd", "hd95", "surface_dice"))
    misses = sum(r.get("outcome") in ("missed", "false structure") for r in rows) if count_misses else ""
    return (f"{name:<12} {100 * d[0]:6.1f} ± {100 * d[1]:4.1f} {a[0]:7.3f} ± {a[1]:5.3f} {h[0]:7.2f} ± {h[1]:5.2f} "
            f"{100 * n[0]:6.1f} ± {100 * n[1]:4.1f} {misses!s:>6}")


def write_results(rows: list[dict], out: Path) -> str:
    """Write metrics.csv and summary.txt into ``out``; returns the summary table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=[f for f in FIELDS if any(f in r for r in rows)])
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in FIELDS if k in r})
    table = summary_table(rows)
    (out / "summary.txt").write_text(table + "\n", encoding="utf-8")
    return table


def score_label_image(pred: sitk.Image, gt: sitk.Image, case: str, tolerance_mm: float = 2.0,
                      structures: Sequence[str] | None = None) -> list[dict]:
    """Score a predicted label image on the ground truth's grid (resampled by world position if needed)."""
    same = pred.GetSize() == gt.GetSize() and np.allclose(pred.GetSpacing(), gt.GetSpacing(), rtol=1e-3) and \
        np.allclose(pred.GetOrigin(), gt.GetOrigin(), atol=1e-3) and np.allclose(pred.GetDirection(), gt.GetDirection(), atol=1e-4)
    if not same:
        pred = sitk.Resample(pred, gt, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    spacing = tuple(gt.GetSpacing())[::-1]
    gt_arr = np.rint(sitk.GetArrayFromImage(gt)).astype(np.int16)
    return evaluate_labels(sitk.GetArrayFromImage(pred).astype(np.int16), gt_arr, spacing, case, tolerance_mm,
                           structures)


def evaluate_model(model, cases: list[tuple[str, dict[str, Path], Path]], device: str = "auto",
                   tolerance_mm: float = 2.0, progress: bool = True, options=None,
                   structures: Sequence[str] | None = None) -> list[dict]:
    """Segment each case with the shipped pipeline and score it.

    Args:
        model: a model id, a bundle folder/zip, or a loaded ``Bundle``.
        cases: (case id, {modality: image path}, label map path) per case.
        options: ``brainbarriers.pipeline.SegmentOptions`` (default: the command line's defaults).
        structures: score only these output label keys (default: all five).
    """
    from brainbarriers.bundles import Bundle, load_bundle
    from brainbarriers.io import read_image
    from brainbarriers.pipeline import Segmenter, SegmentOptions
    from tqdm import tqdm

    bundle = model if isinstance(model, Bundle) else load_bundle(model)
    segmenter = Segmenter(bundle, device, options or SegmentOptions())
    rows = []
    for case, inputs, label_path in tqdm(cases, desc="evaluate", disable=not progress, unit="case"):
        images = {m: read_image(p, m) for m, p in inputs.items() if m in bundle.modalities}
        result = segmenter.run(images)
        rows += score_label_image(result.labels, sitk.ReadImage(str(label_path)), case, tolerance_mm, structures)
    return rows


def labelled_cases(source: Path, only: list[str] | None = None) -> list[tuple[str, dict[str, Path], Path]]:
    """(case, inputs, label) of every case of a data set that has a label map (``prepare``'s discovery)."""
    from .prepare import discover

    found = []
    for cf in discover(Path(source)):
        if only and cf.case not in only:
            continue
        inputs = {m: Path(cf.files[m]) for m in MODALITIES if cf.files.get(m)}
        if cf.files.get("label") and inputs:
            found.append((cf.case, inputs, Path(cf.files["label"])))
    if not found:
        raise FileNotFoundError(f"no labelled cases in {source}")
    return found


def indexed_cases(index: dict, only: list[str]) -> list[tuple[str, dict[str, Path], Path]]:
    """(case, inputs, label) of prepared cases, from the original files the index records."""
    out = []
    for entry in index["cases"]:
        if entry["case"] in only:
            files = entry["files"]
            out.append((entry["case"], {m: Path(files[m]) for m in MODALITIES if files.get(m)}, Path(files["label"])))
    return out


def evaluate_files(pairs: list[tuple[str, Path, Path]], tolerance_mm: float = 2.0,
                   structures: Sequence[str] | None = None) -> list[dict]:
    """Score label-map files (case, prediction, ground truth) on the ground truth's grid."""
    rows = []
    for case, pred_path, gt_path in pairs:
        rows += score_label_image(sitk.ReadImage(str(pred_path)), sitk.ReadImage(str(gt_path)), case, tolerance_mm,
                                  structures)
    return rows
