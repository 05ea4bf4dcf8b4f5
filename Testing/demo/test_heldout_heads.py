"""The shipped demo model on held-out real heads, from T1 alone (Testing/data/heldout).

101 is Colin27 (one real subject), 102 the MNI152NLin6Asym template; neither was used to train or
choose anything (scripts/build_heldout.py). Both are in MNI pose, so the midline is x = 0.

Checked, as the demo issue asks: the cerebellum and both lateral ventricles are found; the falx
runs from the frontal to the occipital pole above the corpus callosum (above the lateral
ventricles' roof); the superior sagittal sinus is one continuous structure along the vertex
(component counts). The ventricles are also scored against the independent label.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "heldout"
CASES = ("101", "102")
CEREBELLUM, FALX, SINUSES, VENTRICLES = 1, 2, 3, 5


def lps_points(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """LPS coordinates (mm) of the voxels of ``mask`` (numpy K, J, I order), shape (N, 3)."""
    ijk = np.argwhere(mask)[:, ::-1].astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + (ijk * np.array(image.GetSpacing())) @ direction.T


def head_extent(t1: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box of the head: the largest component above the image's Otsu threshold."""
    head = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.OtsuThreshold(t1, 0, 1)), sortByObjectSize=True) == 1
    points = lps_points(t1, sitk.GetArrayFromImage(head).astype(bool))
    return points.min(axis=0), points.max(axis=0)


@pytest.fixture(scope="module")
def heads(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("heldout")
    found = {}
    for case in CASES:
        t1_path = HELDOUT / case / f"{case}_t1.nii.gz"
        cmd = [sys.executable, "-m", "brainbarriers", "segment", "--t1", str(t1_path), "--case", case,
               "--output", str(out), "--overwrite", "--progress", "none"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-2000:]
        labels_img = sitk.ReadImage(str(out / f"{case}_labels.nii.gz"))
        t1 = sitk.ReadImage(str(t1_path))
        truth = sitk.ReadImage(str(HELDOUT / case / f"{case}_labelmap_task1.nii.gz"))
        found[case] = {"labels_img": labels_img, "labels": sitk.GetArrayFromImage(labels_img),
                       "t1": t1, "truth": sitk.GetArrayFromImage(truth) == VENTRICLES}
    return found


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_cerebellum_is_found_below_and_behind(heads, case):
    head = heads[case]
    mask = head["labels"] == CEREBELLUM
    voxel_ml = float(np.prod(head["labels_img"].GetSpacing())) / 1000.0
    assert 60 <= mask.sum() * voxel_ml <= 260, mask.sum() * voxel_ml
    lo, hi = head_extent(head["t1"])
    centre = (np.median(lps_points(head["labels_img"], mask), axis=0) - lo) / (hi - lo)
    assert centre[1] > 0.55 and centre[2] < 0.45 and abs(centre[0] - 0.5) < 0.1, centre


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_both_lateral_ventricles_are_found(heads, case):
    head = heads[case]
    image, predicted, truth = head["labels_img"], head["labels"] == VENTRICLES, head["truth"]
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    points = lps_points(image, predicted & truth)
    right, left = (points[:, 0] < -3).sum() * voxel_ml, (points[:, 0] > 3).sum() * voxel_ml
    assert right >= 2.0 and left >= 2.0, (right, left)  # ml of each lateral ventricle found
    # more than half of each side's independent label is found
    truth_points = lps_points(image, truth)
    assert right > 0.5 * (truth_points[:, 0] < -3).sum() * voxel_ml
    assert left > 0.5 * (truth_points[:, 0] > 3).sum() * voxel_ml


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_falx_runs_from_frontal_to_occipital_pole_above_the_corpus_callosum(heads, case):
    head = heads[case]
    image = head["labels_img"]
    falx = lps_points(image, head["labels"] == FALX)
    lo, hi = head_extent(head["t1"])
    ap = (falx[:, 1] - lo[1]) / (hi[1] - lo[1])  # 0 anterior .. 1 posterior
    assert np.percentile(ap, 2) < 0.3 and np.percentile(ap, 98) > 0.7, (ap.min(), ap.max())
    assert np.mean(np.abs(falx[:, 0]) <= 6.0) > 0.9  # a midline sheet
    # above the corpus callosum: over the ventricles' bodies, the falx stays above their roof
    ventricles = lps_points(image, head["truth"])
    front, back = np.percentile(ventricles[:, 1], [35, 65])
    roof = ventricles[:, 2].max()
    over_bodies = falx[(falx[:, 1] >= front) & (falx[:, 1] <= back)]
    assert len(over_bodies) > 0 and np.percentile(over_bodies[:, 2], 5) > roof, (over_bodies[:, 2].min(), roof)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_superior_sagittal_sinus_is_one_structure_along_the_vertex(heads, case):
    head = heads[case]
    image, labels = head["labels_img"], head["labels"]
    roof = lps_points(image, head["truth"])[:, 2].max()
    z = lps_points(image, np.ones(labels.shape, bool))[:, 2].reshape(labels.shape)
    vertex = (labels == SINUSES) & (z > roof + 10)  # above the transverse sinuses and the torcula
    assert vertex.sum() > 0
    components, count = ndimage.label(vertex, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(components.ravel())[1:]
    assert sizes.max() >= 0.9 * vertex.sum(), (count, sorted(sizes)[::-1][:5])
    lo, hi = head_extent(head["t1"])
    largest = lps_points(image, components == np.argmax(sizes) + 1)
    span = (largest[:, 1].max() - largest[:, 1].min()) / (hi[1] - lo[1])
    assert span > 0.4, span  # along the vertex, not a blob
