"""The shipped demo model on real heads it never trained on, from T1 alone.

Held-out heads (Testing/data/heldout), never used for any choice: 104, SPM's avg305T1; 105,
the WashU average of 32 young adults at 3 T (whole head with neck, in its own pose); and 106,
FreeSurfer's fsaverage (40 heads, with neck), whose label map also holds FreeSurfer's own
cerebellum. Development
heads (Testing/data/devheads), looked at while the model and pipeline were improved: 101,
Colin27; 102, the MNI152NLin6Asym template; 103, the pydeface mean head (with neck, own pose)
(scripts/build_heldout.py). Checked, as the demo issue asks: the cerebellum and both lateral
ventricles are found; the falx runs from the frontal to the occipital pole above the corpus
callosum (above the lateral ventricles' roof); the superior sagittal sinus is one continuous
structure along the vertex (component counts). Figures: brainbarriers_training.anatomy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from brainbarriers_training.anatomy import HEAD_CHECKS, anatomy_report, read_mni_transform

DATA = Path(__file__).resolve().parents[1] / "data"
#: case -> its folder under Testing/data
SETS = {"101": "devheads", "102": "devheads", "103": "devheads", "104": "heldout", "105": "heldout",
        "106": "heldout"}
CASES = tuple(SETS)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("heldout")
    found = {}
    for case in CASES:
        folder = DATA / SETS[case] / case
        t1_path = folder / f"{case}_t1.nii.gz"
        cmd = [sys.executable, "-m", "brainbarriers", "segment", "--t1", str(t1_path), "--case", case,
               "--output", str(out), "--overwrite", "--progress", "none"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-2000:]
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{case}_labelmap_task1.nii.gz")))
        labels = sitk.ReadImage(str(out / f"{case}_labels.nii.gz"))
        found[case] = anatomy_report(labels, sitk.ReadImage(str(t1_path)), truth == 5, read_mni_transform(folder, case),
                                     truth == 1)  # an independent cerebellum label on 106
        flags = json.loads((out / f"{case}_report.json").read_text())["quality_flags"]
        found[case]["fov_flagged_structures"] = float(sum(f["kind"] == "field_of_view" for f in flags))
        print(case, {k: round(v, 3) for k, v in found[case].items()})
    return found


#: Checks the shipped demo model (through the pipeline with its anatomical rules and, for heads with
#: the neck in view, the atlas) does not meet on these heads (docs/demo.md). 0.5.0 on development
#: head 101: in each coronal slice over the ventricle bodies its falx ends 2 mm above that slice's
#: ventricle roof, but 5 % of those voxels lie at the height of the frontal horns' top, the check's
#: roof (0.4.2: 2 mm above it). Strict: a listed check fails as soon as a model meets it, so the
#: mark must then go.
OPEN: dict[str, set[str]] = {"falx_edge": {"101"}}


def cases_for(check: str) -> list:
    reason = "the shipped demo model does not meet this here yet (issue 16)"
    return [pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=reason))
            if case in OPEN.get(check, ()) else case for case in CASES]


@pytest.mark.slow
@pytest.mark.parametrize("case", cases_for("cerebellum"))
def test_cerebellum_is_found_below_and_behind(reports, case):
    assert HEAD_CHECKS["cerebellum"](reports[case]), reports[case]  # 60-260 ml, low, at the back, central


@pytest.mark.slow
def test_most_of_the_independent_cerebellum_label_is_found(reports):
    # 106's label is FreeSurfer's segmentation of that head: the networks must cover most of it
    assert reports["106"]["cerebellum_label_covered"] > 0.8, reports["106"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_both_lateral_ventricles_are_found(reports, case):
    assert HEAD_CHECKS["ventricles"](reports[case]), reports[case]  # more than half of each side's label


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_falx_runs_from_frontal_to_occipital_pole_on_the_midline(reports, case):
    assert HEAD_CHECKS["falx"](reports[case]), reports[case]  # front to back, a midline sheet


@pytest.mark.slow
@pytest.mark.parametrize("case", cases_for("falx_edge"))
def test_falx_stays_above_the_corpus_callosum(reports, case):
    # over the ventricle bodies, the falx's lower edge stays above their roof
    assert HEAD_CHECKS["falx_edge"](reports[case]), reports[case]


@pytest.mark.slow
@pytest.mark.parametrize("case", cases_for("sagittal_sinus"))
def test_superior_sagittal_sinus_is_one_structure_along_the_vertex(reports, case):
    assert HEAD_CHECKS["sagittal_sinus"](reports[case]), reports[case]  # one structure along the vertex


#: Heads with their neck in view: they reach further below the top of the head than any
#: training head (quality flag ``field_of_view``).
NECK_IN_VIEW = {"103", "105", "106"}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_neck_in_view_is_flagged_on_every_structure(reports, case):
    expected = 5.0 if case in NECK_IN_VIEW else 0.0
    assert reports[case]["fov_flagged_structures"] == expected, reports[case]


def drawn_head() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A hand-made head (2 mm voxels, K (z), J (y), I (x)): (head intensities, labels, ventricle
    mask) with a midline falx above the roof, one sinus tube along the vertex, two lateral
    ventricles and the cerebellum low and behind."""
    shape = (40, 50, 40)
    k, j, i = np.indices(shape)
    head = ((i - 19.5) / 19) ** 2 + ((j - 24.5) / 24) ** 2 + ((k - 19.5) / 19) ** 2 <= 1
    labels = np.zeros(shape, np.uint8)
    ventricles = np.zeros(shape, bool)
    ventricles[18:22, 20:30, 14:18] = ventricles[18:22, 20:30, 22:26] = True
    labels[ventricles] = 5
    labels[24:34, 5:45, 19:21] = 2  # falx: midline, front to back, above the roof
    labels[35:37, 8:42, 19:21] = 3  # one sinus tube along the vertex
    labels[5:12, 32:45, 10:30] = 1  # cerebellum: low and behind
    return head.astype(np.float32) * 100, labels, ventricles


def as_images(arrays, origin=(-39.0, -49.0, -39.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> list[sitk.Image]:
    """The arrays as images on one 2 mm grid (centred on 0 by default)."""
    images = []
    for array in arrays:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((2.0, 2.0, 2.0))
        image.SetOrigin(tuple(origin))
        image.SetDirection(tuple(float(d) for d in direction))
        images.append(image)
    return images


def test_report_on_a_drawn_head():
    """The figures on a hand-made head: a midline falx, one sinus tube, two ventricles."""
    head, labels, ventricles = drawn_head()
    image, label_image = as_images([head, labels])
    r = anatomy_report(label_image, image, ventricles)
    assert r["right_lateral_ventricle_found_ml"] == r["left_lateral_ventricle_found_ml"] == 4 * 10 * 4 * 8 / 1000
    assert r["falx_front"] < 0.15 and r["falx_back"] > 0.85 and r["falx_on_midline"] == 1.0
    assert r["falx_edge_above_roof_mm"] > 0
    assert r["vertex_sinus_components"] == 1 and r["vertex_sinus_largest_fraction"] == 1.0
    assert r["cerebellum_y"] > 0.55 and r["cerebellum_z"] < 0.45
    labels[35:37, 24:26, 19:21] = 0  # cut the sinus: two components
    _, label_image = as_images([head, labels])
    assert anatomy_report(label_image, image, ventricles)["vertex_sinus_components"] == 2


def test_report_of_a_head_in_another_pose_uses_its_mni_affine():
    """The drawn head moved 30 mm left and turned 20 degrees about its vertical axis, with the affine
    that maps MNI points into it: the same figures as in MNI pose."""
    head, labels, ventricles = drawn_head()
    image, label_image = as_images([head, labels])
    in_mni = anatomy_report(label_image, image, ventricles)
    to_image = sitk.AffineTransform(3)
    to_image.SetMatrix(sitk.Euler3DTransform((0, 0, 0), 0.0, 0.0, np.deg2rad(20)).GetMatrix())
    to_image.SetTranslation((30.0, 0.0, 0.0))
    moved_image, moved_labels = as_images([head, labels], to_image.TransformPoint((-39.0, -49.0, -39.0)),
                                          to_image.GetMatrix())
    moved = anatomy_report(moved_labels, moved_image, ventricles, to_image)
    assert moved.keys() == in_mni.keys()
    for key, value in in_mni.items():
        assert moved[key] == pytest.approx(value, abs=1e-6), key
    unmapped = anatomy_report(moved_labels, moved_image, ventricles)
    assert unmapped["falx_on_midline"] < 0.5  # without the affine the falx is far off x = 0
