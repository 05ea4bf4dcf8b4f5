"""The shipped demo model on the bundled real-anatomy sample (the README's main command).

Runs ``brainbarriers segment`` with the default model (brainbarriers-demo) on
Resources/SampleData and checks the written files, that every structure is present, lies in
its anatomical region of the head and has a plausible volume. Regions are fractions of the
head's bounding box in patient (LPS) coordinates: x 0 = right .. 1 = left, y 0 = anterior ..
1 = posterior, z 0 = inferior .. 1 = superior.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from brainbarriers.structures import OUTPUT_LABELS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Resources" / "SampleData"
BUNDLE = ROOT / "SlicerBrainBarriers" / "brainbarriers" / "models" / "brainbarriers-demo"

#: gross-error volume bounds (ml): an adult head's structures, widened for the demo model, which
#: over-segments the thin structures (training labels: cerebellum 178, falx 24, sinuses 12,
#: tentorium 13, ventricles 27 ml). Empty or whole-head outputs fail.
VOLUME_ML = {"cerebellum": (60, 260), "falx": (1, 60), "sinuses": (1, 60), "tentorium": (1, 40), "ventricles": (4, 80)}


def _fractions(points_lps: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (points_lps - lo) / (hi - lo)


def _physical(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """LPS coordinates (mm) of the voxels of ``mask`` (numpy K,J,I order)."""
    kji = np.argwhere(mask)
    ijk = kji[:, ::-1].astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + (ijk * np.array(image.GetSpacing())) @ direction.T


def _head_box(ct: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (LPS mm) of the head: the largest component above -300 HU (no headrest)."""
    body = sitk.BinaryMorphologicalOpening(sitk.BinaryThreshold(ct, -300, 5000), [2, 2, 2])
    head = sitk.RelabelComponent(sitk.ConnectedComponent(body), sortByObjectSize=True) == 1
    pts = _physical(ct, sitk.GetArrayFromImage(head).astype(bool))
    return pts.min(axis=0), pts.max(axis=0)


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo-output")
    cmd = [sys.executable, "-m", "brainbarriers", "segment",
           "--ct", str(SAMPLE / "sample_ct.nrrd"), "--t1", str(SAMPLE / "sample_t1.nrrd"),
           "--t2", str(SAMPLE / "sample_t2.nrrd"), "--output", str(out), "--overwrite", "--overview",
           "--progress", "none"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-2000:]
    return out


def test_bundle_is_the_shipped_default():
    manifest = json.loads((BUNDLE / "manifest.json").read_text())
    assert manifest["id"] == "brainbarriers-demo"
    assert ["t1"] in manifest["inputs"]["supported_subsets"]
    assert sum(f["size"] for f in manifest["files"]) < 10_000_000


@pytest.mark.slow
def test_demo_writes_all_outputs(demo_output: Path):
    for name in ("sample_ct.seg.nrrd", "sample_ct_labels.nii.gz", "sample_ct_report.json", "sample_ct_overview.png"):
        assert (demo_output / name).is_file(), name
    report = json.loads((demo_output / "sample_ct_report.json").read_text())
    assert report  # a real report, not an empty file


@pytest.mark.slow
def test_demo_structures_in_their_regions(demo_output: Path):
    labels_img = sitk.ReadImage(str(demo_output / "sample_ct_labels.nii.gz"))
    labels = sitk.GetArrayFromImage(labels_img)
    lo, hi = _head_box(sitk.ReadImage(str(SAMPLE / "sample_ct.nrrd")))
    voxel_ml = float(np.prod(labels_img.GetSpacing())) / 1000.0
    centre, extent = {}, {}
    for lab in OUTPUT_LABELS:
        mask = labels == lab.value
        volume = mask.sum() * voxel_ml
        low, high = VOLUME_ML[lab.key]
        assert low <= volume <= high, f"{lab.key}: {volume:.1f} ml outside [{low}, {high}]"
        f = _fractions(_physical(labels_img, mask), lo, hi)
        centre[lab.key] = np.median(f, axis=0)
        extent[lab.key] = (np.percentile(f, 5, axis=0), np.percentile(f, 95, axis=0))

    cb, fx, sn, te, ve = (centre[k] for k in ("cerebellum", "falx", "sinuses", "tentorium", "ventricles"))
    # cerebellum: inferior and posterior, on both sides of the midline
    assert cb[1] > 0.55 and cb[2] < 0.45 and abs(cb[0] - 0.5) < 0.1, cb
    # ventricles: central, in the middle third of the height
    assert abs(ve[0] - 0.5) < 0.1 and 0.3 < ve[1] < 0.7 and 0.3 < ve[2] < 0.75, ve
    # falx: a thin midline sheet above the ventricles
    fx_lo, fx_hi = extent["falx"]
    assert abs(fx[0] - 0.5) < 0.06 and fx_hi[0] - fx_lo[0] < 0.12, (fx, fx_lo, fx_hi)
    assert fx[2] > ve[2], (fx, ve)
    # tentorium: above the cerebellum, below the ventricles, posterior
    assert cb[2] < te[2] < ve[2] and te[1] > 0.5, (te, cb, ve)
    # sinuses: reach the top of the head (superior sagittal) and lie posterior on average
    assert extent["sinuses"][1][2] > 0.75 and sn[1] > 0.45, (sn, extent["sinuses"])
