"""Build the localisation atlas the pipeline falls back on when the neck is in view.

The atlas is the bundled sample head (Resources/SampleData: the InVesalius CT with SPM's avg152
T1 and T2, GPL-2) at 3.6 mm, and per fine target the box of its constructed label on it
(scripts/build_demo_labels.py: the training labels of case 001). It is the same head the demo
model trained on, so it places nothing the model was not shown; no held-out or development head
is used. Writes ``SlicerBrainBarriers/brainbarriers/atlas/`` (``brainbarriers.atlas`` reads it).

Usage (after ``scripts/build_demo_labels.py --work WORK`` has written WORK/demo_labels.nrrd)::

    python scripts/build_atlas.py [--work /work/demo_work]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers.atlas import ATLAS_DIR, ATLAS_SPACING_MM, BOXES_FILE
from brainbarriers.structures import FINE_TARGETS, MODALITIES
from brainbarriers_training.sinus import split_sinus

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "Resources/SampleData"


def coarsen(image: sitk.Image, spacing: float) -> sitk.Image:
    """``image`` smoothed and resampled to ``spacing`` (mm) over the same extent, as 16-bit integers."""
    old = np.array(image.GetSpacing())
    sigma = np.sqrt(np.maximum(spacing**2 - old**2, 0)) * 0.4
    smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), sigma.tolist())
    size = np.ceil(np.array(image.GetSize()) * old / spacing).astype(int)
    out = sitk.Resample(smooth, size.tolist(), sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                        [spacing] * 3, image.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.Cast(sitk.Round(out), sitk.sitkInt16)


def target_boxes(labels: sitk.Image) -> dict[str, list[list[float]]]:
    """Per fine target: the LPS box (mm, voxel edges) of its label, [[x, y, z] min, [x, y, z] max]."""
    array = sitk.GetArrayFromImage(labels)
    sagittal, transverse = split_sinus(array, labels.GetDirection(), labels.GetSpacing())
    masks = {"sagittal_sinus": sagittal, "transverse_sinus": transverse}
    direction = np.array(labels.GetDirection()).reshape(3, 3)
    spacing = np.array(labels.GetSpacing())
    boxes = {}
    for t in FINE_TARGETS:
        mask = masks.get(t.key, array == t.label)
        corners = np.argwhere(mask)[:, ::-1].astype(float)
        ends = np.concatenate([corners - 0.5, corners + 0.5])
        points = np.array(labels.GetOrigin()) + (ends * spacing) @ direction.T
        boxes[t.key] = [np.round(points.min(0), 1).tolist(), np.round(points.max(0), 1).tolist()]
    return boxes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/work/demo_work"))
    args = ap.parse_args(argv)
    ATLAS_DIR.mkdir(exist_ok=True)
    for m in MODALITIES:
        sitk.WriteImage(coarsen(sitk.ReadImage(str(SAMPLE / f"sample_{m}.nrrd")), ATLAS_SPACING_MM),
                        str(ATLAS_DIR / f"{m}.nii.gz"), useCompression=True)
    boxes = target_boxes(sitk.ReadImage(str(args.work / "demo_labels.nrrd")))
    (ATLAS_DIR / BOXES_FILE).write_text(json.dumps(boxes, indent=1) + "\n", encoding="utf-8")
    shutil.copy(SAMPLE / "LICENSES/GPL-2.0.txt", ATLAS_DIR / "GPL-2.0.txt")
    for key, (lo, hi) in boxes.items():
        print(f"{key}: {lo} .. {hi}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
