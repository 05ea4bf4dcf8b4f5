"""Quality flags: one constructed input per flag kind, each checked in the measures, the flag and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from brainbarriers import export, quality
from brainbarriers.pipeline import SegmentResult
from brainbarriers.structures import FINE_TARGETS, OUTPUT_LABELS, output_label
from pipeline_helpers import run_cli

SHAPE = (40, 40, 40)  # model grid = reference grid here: 1 mm, identity direction
#: One box per fine target (model-grid index boxes), apart from each other.
BOXES = {
    "cerebellum": ((2, 4, 4), (10, 16, 16)),
    "falx": ((20, 6, 18), (34, 30, 21)),
    "sagittal_sinus": ((14, 24, 30), (38, 32, 34)),  # meets the transverse sinus: one piece
    "transverse_sinus": ((12, 30, 4), (16, 36, 36)),
    "tentorium": ((12, 4, 22), (15, 16, 36)),
    "ventricles": ((20, 10, 4), (28, 22, 14)),
}


def _grid() -> sitk.Image:
    img = sitk.Image(list(reversed(SHAPE)), sitk.sitkUInt8)
    img.SetOrigin((-20.0, -20.0, -20.0))
    return img


def _case():
    """(labels image, probabilities) of a clean result: every structure a confident solid box."""
    arr = np.zeros(SHAPE, np.uint8)
    probabilities = {}
    for t in FINE_TARGETS:
        lo, hi = BOXES[t.key]
        box = ((lo[0] - 1, lo[1] - 1, lo[2] - 1), (hi[0] + 1, hi[1] + 1, hi[2] + 1))
        prob = np.full(tuple(b - a for a, b in zip(*box)), 0.01, np.float32)
        prob[1:-1, 1:-1, 1:-1] = 0.98
        probabilities[t.key] = (box, prob)
        arr[tuple(slice(a, b) for a, b in zip(lo, hi))] = t.label
    return arr, probabilities


def _labels(arr: np.ndarray) -> sitk.Image:
    return quality.geometry.array_to_image(arr, _grid())


def _stats(arr: np.ndarray) -> dict:
    """Training statistics that put the clean case's volumes well inside the range."""
    volumes = {lab.key: float((arr == lab.value).sum()) / 1000.0 for lab in OUTPUT_LABELS}
    return {k: {"cases": 10, "min_ml": v * 0.8, "max_ml": v * 1.2, "mean_ml": v, "std_ml": v * 0.1} for k, v in volumes.items()}


def _assess(arr, probabilities, stats=None, **kw) -> quality.Assessment:
    return quality.assess(_labels(arr), list(FINE_TARGETS), probabilities, _grid(),
                          _stats(_case()[0]) if stats is None else stats, **kw)


def _kinds(assessment: quality.Assessment) -> set[tuple[str, str]]:
    return {(f.structure, f.kind) for f in assessment.flags}


def test_clean_case_has_no_flags():
    arr, probs = _case()
    a = _assess(arr, probs)
    assert a.flags == []
    assert set(a.measures) == {lab.key for lab in OUTPUT_LABELS}
    assert a.measures["falx"]["components"] == 1 and a.measures["falx"]["uncertain_fraction"] == 0.0


def test_missing_structure():
    arr, probs = _case()
    arr[arr == 4] = 0  # tentorium removed from the result
    a = _assess(arr, probs)
    assert _kinds(a) == {("tentorium", "missing")}
    assert "Tentorium cerebelli is missing" in a.flags[0].reason
    del probs["tentorium"]  # not found by the coarse stage at all
    assert "coarse stage did not find it" in _assess(arr, probs).flags[0].reason


def test_doubled_volume():
    arr, probs = _case()
    lo, hi = BOXES["ventricles"]
    arr[lo[0]:hi[0], hi[1]:hi[1] + (hi[1] - lo[1]), lo[2]:hi[2]] = 5  # ventricles twice as large, still one piece
    a = _assess(arr, probs)
    assert _kinds(a) == {("ventricles", "volume")}
    flag = a.flags[0]
    assert flag.value == pytest.approx(2 * 8 * 12 * 10 / 1000.0) and "larger than any seen in training" in flag.reason
    assert _assess(arr, probs, stats={}).flags == []  # a bundle without volume statistics: no volume flag


def test_noisy_region_is_low_confidence():
    arr, probs = _case()
    box, prob = probs["cerebellum"]
    rng = np.random.default_rng(0)
    prob[1:-1, 1:-1, 1:-1] = rng.uniform(0.5, 0.75, prob[1:-1, 1:-1, 1:-1].shape)  # unsure everywhere inside
    a = _assess(arr, probs)
    assert _kinds(a) == {("cerebellum", "confidence")}
    m = a.measures["cerebellum"]
    assert m["uncertain_fraction"] == 1.0 and m["mean_entropy_bits"] > 0.8
    assert "low confidence" in a.flags[0].reason


def test_several_components_where_one_is_expected():
    arr, probs = _case()
    lo, hi = BOXES["cerebellum"]
    arr[lo[0]:hi[0], lo[1]:hi[1], 8:10] = 0  # cut in two halves
    a = _assess(arr, probs)
    assert ("cerebellum", "components") in _kinds(a)
    assert a.measures["cerebellum"]["components"] == 2
    assert "2 separate pieces" in [f for f in a.flags if f.kind == "components"][0].reason
    # the ventricles may come in two pieces (structure table), not in three
    assert output_label("ventricles").components == 2
    v_lo, v_hi = BOXES["ventricles"]
    arr[v_lo[0]:v_hi[0], v_lo[1]:v_hi[1], 8:9] = 0
    assert ("ventricles", "components") not in _kinds(_assess(arr, probs))
    arr[v_lo[0]:v_hi[0], v_lo[1]:v_hi[1], 11:12] = 0
    assert ("ventricles", "components") in _kinds(_assess(arr, probs))


def test_box_and_structure_at_the_border():
    arr, probs = _case()
    (k0, j0, i0), (k1, j1, i1) = probs["sagittal_sinus"][0]
    box = ((k0, j0, i0), (SHAPE[0], j1, i1))  # the coarse box reaches the top slice ...
    prob = np.full(tuple(b - a for a, b in zip(*box)), 0.01, np.float32)
    probs["sagittal_sinus"] = (box, prob)
    assert ("sinuses", "border") not in _kinds(_assess(arr, probs))  # ... the structure does not: no flag
    prob[-3:, 2:-2, 1:-1] = 0.9  # the structure runs into the top slice
    a = _assess(arr, probs)
    assert ("sinuses", "border") in _kinds(a)
    assert "Venous sinuses reaches the superior image border" in [f.reason for f in a.flags if f.kind == "border"][0]


def test_flip_disagreement():
    arr, probs = _case()
    channels = np.random.default_rng(1).normal(size=(1, *SHAPE)).astype(np.float32)

    def symmetric(target, crop):  # the same answer for the image and its mirror image
        return np.full(crop.shape[1:], 0.9, np.float32)

    def lopsided(target, crop):  # always calls the right half of the falx crop foreground, whatever the image
        p = np.full(crop.shape[1:], 0.9, np.float32)
        if target.key == "falx":
            p[..., crop.shape[-1] // 2 + 1:] = 0.1
        return p

    a = _assess(arr, probs, flip=quality.FlipPass(symmetric, channels, 2))
    assert a.flags == [] and a.measures["falx"]["flip_dice"] == {"falx": 1.0}
    a = _assess(arr, probs, flip=quality.FlipPass(lopsided, channels, 2))
    assert _kinds(a) == {("falx", "flip")}
    assert a.flags[0].value < 0.8 and "left-right mirrored" in a.flags[0].reason


def test_uncertainty_volume_on_reference_grid():
    arr, probs = _case()
    reference = sitk.Image(20, 20, 20, sitk.sitkInt16)
    reference.SetSpacing((2.0, 2.0, 2.0))
    reference.SetOrigin((-19.5, -19.5, -19.5))
    a = _assess(arr, probs, uncertainty_reference=reference)
    u = sitk.GetArrayFromImage(a.uncertainty)
    assert a.uncertainty.GetSize() == reference.GetSize() and a.uncertainty.GetSpacing() == reference.GetSpacing()
    assert u.min() >= 0.0 and u.max() <= 1.0 and u.max() > 0.05  # box edges (p 0.01 | 0.98) are uncertain


def test_flags_in_the_report(tmp_path):
    arr, probs = _case()
    arr[arr == 4] = 0
    assessment = _assess(arr, probs)
    result = SegmentResult(labels=_labels(arr), reference="ct", modalities=["ct"], targets=[t.key for t in FINE_TARGETS],
                           quality=assessment)

    class _Bundle:
        id, version, sha256, path = "m", "1.0.0", "0" * 64, tmp_path

    report = export.build_report(result, _Bundle(), {}, "c", "fast", [lab.value for lab in OUTPUT_LABELS], 0.25)
    export.write_report(tmp_path / "r.json", report)
    back = json.loads((tmp_path / "r.json").read_text())
    assert back["structures"]["tentorium"]["flags"] == [{"kind": "missing", "reason": assessment.flags[0].reason}]
    assert back["structures"]["falx"]["flags"] == []
    assert [f["kind"] for f in back["quality_flags"]] == ["missing"]
    assert back["quality_measures"]["falx"]["components"] == 1


def test_cli_writes_flags_and_uncertainty(case_files, tiny_bundle, tmp_path):
    """Through the real command line: a bundle whose training volumes no result can match, so every
    structure is flagged (volume, or missing when the random network finds nothing)."""
    from brainbarriers.bundles import load_bundle, write_bundle
    from safetensors.torch import load_file

    source = load_bundle(tiny_bundle)
    manifest = {k: v for k, v in source.manifest.items() if k != "files"}
    manifest["volume_stats"] = {lab.key: {"cases": 3, "min_ml": 1e-6, "max_ml": 2e-6} for lab in OUTPUT_LABELS}
    states = {f["path"]: load_file(str(source.path / f["path"])) for f in source.manifest["files"]
              if f["path"].endswith(".safetensors")}
    bundle = write_bundle(tmp_path / "flagged", manifest, states)
    out = tmp_path / "out"
    proc = run_cli("segment", *[x for m in ("ct", "t1", "t2") for x in (f"--{m}", str(case_files[m]))], "--model", str(bundle), "--output", str(out),
                   "--case", "c", "--uncertainty", "--structures", "falx", "ventricles", "--quality", "full")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "c_report.json").read_text())
    for key in ("falx", "ventricles"):
        kinds = {f["kind"] for f in report["structures"][key]["flags"]}
        assert kinds & {"volume", "missing"}, report["structures"][key]
    assert "check: " in proc.stdout
    for key in ("falx", "ventricles"):  # --quality full: the mirrored pass ran wherever a box was found
        if report["fine_boxes"][key] is not None:
            assert 0.0 <= report["quality_measures"][key]["flip_dice"][key] <= 1.0
    u = sitk.ReadImage(str(out / "c_uncertainty.nii.gz"))
    ct = sitk.ReadImage(str(case_files["ct"]))
    assert u.GetSize() == ct.GetSize() and np.allclose(u.GetOrigin(), ct.GetOrigin(), atol=1e-4)
    assert u.GetPixelID() == sitk.sitkFloat32
    assert report["outputs"]["uncertainty"].endswith("c_uncertainty.nii.gz")


def _drawn_head(top_k: int, shape=(60, 30, 30)) -> np.ndarray:
    """One channel: a head-wide block of tissue from the bottom of the grid up to slice ``top_k``
    (inclusive), a few voxels of noise above it, on a dark background."""
    arr = np.zeros(shape, np.float32)
    arr[: top_k + 1, 5:25, 5:25] = 1.0  # 20 x 20 voxels
    arr[top_k + 3, 10, 10] = 1.0  # a speck above the scalp: no head there
    return arr


def test_extent_below_the_top_of_the_head():
    spacing = (2.0, 2.0, 2.0)  # a 20 x 20 voxel slice is 1600 mm^2 at 2 mm: below the area bar
    channels = np.stack([_drawn_head(39), np.zeros((60, 30, 30), np.float32)])  # a missing input: all zero
    assert quality.extent_below_head_top(channels, spacing) is None
    spacing = (3.0, 3.0, 2.0)  # 3600 mm^2 per slice
    assert quality.extent_below_head_top(channels, spacing) == pytest.approx(40 * 2.0)
    assert quality.extent_below_head_top(channels[::-1].copy(), spacing) == pytest.approx(80.0)  # channel order


def test_field_of_view_flag_when_the_image_reaches_further_down_than_any_training_head():
    stats = quality.field_of_view_statistics([160.8, 182.4, None, 170.0])
    assert stats == {"below_head_top_mm": {"cases": 3, "min": 160.8, "max": 182.4}}
    label = output_label("cerebellum")
    margin = quality.Thresholds().fov_margin_mm
    assert quality.field_of_view_flag(label, 182.4 + margin, stats) is None
    flag = quality.field_of_view_flag(label, 218.0, stats)
    assert flag.kind == "field_of_view" and flag.value == 218.0
    assert "218 mm below the top of the head" in flag.reason and "neck" in flag.reason
    assert quality.field_of_view_flag(label, 218.0, None) is None  # a bundle without the statistics
    assert quality.field_of_view_flag(label, None, stats) is None  # no head found
    arr, probs = _case()
    kinds = _kinds(_assess(arr, probs, field_of_view=(218.0, stats)))
    assert {k for k in kinds if k[1] == "field_of_view"} == {(lab.key, "field_of_view") for lab in OUTPUT_LABELS}
    assert not any(k[1] == "field_of_view" for k in _kinds(_assess(arr, probs, field_of_view=(170.0, stats))))
