"""The localisation atlas for heads with the neck in view: its data, its registration, the boxes it
places, and the coarse stage using it (the demo model on the sample head)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from brainbarriers import atlas, geometry
from brainbarriers.bundles import load_bundle
from brainbarriers.io import read_image
from brainbarriers.pipeline import Segmenter, SegmentOptions, clip_to_zone, keep_in_zones, training_view_start
from brainbarriers.structures import FINE_TARGETS, fine_target

SAMPLE_T1 = Path(__file__).resolve().parents[2] / "Resources/SampleData/sample_t1.nrrd"


def _centre(box) -> np.ndarray:
    return (np.array(box[0]) + np.array(box[1])) / 2


def test_the_atlas_places_every_structure_where_the_anatomy_puts_it():
    boxes = atlas.atlas_boxes()
    assert set(boxes) == {t.key for t in FINE_TARGETS}
    lo, hi = geometry.world_bounds(atlas.atlas_image("t1"))
    for key, (a, b) in boxes.items():
        assert np.all(np.array(a) < np.array(b)) and np.all(np.array(a) >= lo - 1) and np.all(np.array(b) <= hi + 1), key
    top = {key: box[1][2] for key, box in boxes.items()}  # LPS: z runs upwards
    assert top["cerebellum"] < top["tentorium"] < top["ventricles"] < top["falx"] < top["sagittal_sinus"]
    assert _centre(boxes["cerebellum"])[1] > _centre(boxes["ventricles"])[1]  # behind (P)
    for m in ("ct", "t1", "t2"):
        image = atlas.atlas_image(m)
        assert sitk.GetArrayViewFromImage(image).min() == 0 and np.allclose(image.GetSpacing(), atlas.ATLAS_SPACING_MM)


def _known_affine() -> sitk.AffineTransform:
    """Atlas -> case: tilted 8 degrees about the left-right axis, 8 % larger, shifted."""
    a = math.radians(8)
    rotation = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    out = sitk.AffineTransform(3)
    out.SetMatrix((1.08 * rotation).ravel().tolist())
    out.SetTranslation((5.0, -12.0, 20.0))
    return out


def test_registration_recovers_a_known_pose_of_the_atlas_head():
    truth = _known_affine()
    source = atlas.atlas_image("t1")
    lo, hi = geometry.world_bounds(source)
    grid = geometry.empty_grid(lo - 30, (2.4, 2.4, 2.4), np.ceil((hi - lo + 60) / 2.4).astype(int).tolist())
    case = sitk.Resample(source, grid, truth.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    found = atlas.register_atlas(case, "t1")
    for key in ("cerebellum", "ventricles", "falx"):
        for corner in np.array(atlas.atlas_boxes()[key]):
            error = np.linalg.norm(np.array(found.TransformPoint(corner.tolist())) - truth.TransformPoint(corner.tolist()))
            assert error < 4.0, (key, corner, error)


def test_registration_gives_one_transform_whatever_itks_thread_count():
    # several ITK threads sum the metric in a varying order: the same head placed the atlas up to
    # 2 mm apart from one run to the next, and a box edge moved with it
    source = atlas.atlas_image("t1")
    lo, hi = geometry.world_bounds(source)
    grid = geometry.empty_grid(lo - 30, (2.4, 2.4, 2.4), np.ceil((hi - lo + 60) / 2.4).astype(int).tolist())
    case = sitk.Resample(source, grid, _known_affine().GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    found = []
    try:
        for threads in (1, 2, 4, 2):
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
            found.append(atlas.register_atlas(case, "t1").GetParameters())
            assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == threads  # left as the caller set it
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
    assert all(p == found[0] for p in found), found


def test_a_mapped_box_covers_the_atlas_box_on_the_grid_widened_by_the_margin():
    grid = geometry.empty_grid((-100.0, -120.0, -80.0), (2.0, 2.0, 2.0), (100, 120, 90))
    box = ((-10.0, 20.0, -40.0), (10.0, 60.0, 0.0))
    # voxels whose centre lies on the box's faces count (as in geometry.map_box)
    assert atlas.mapped_box(box, sitk.Transform(), grid) == ((20, 70, 45), (41, 91, 56))
    assert atlas.mapped_box(box, sitk.Transform(), grid, 10.0) == ((15, 65, 40), (46, 96, 61))
    shifted = sitk.TranslationTransform(3, (0.0, 0.0, 500.0))
    assert atlas.mapped_box(box, shifted, grid) is None  # beyond the grid


def test_the_margin_below_applies_to_the_inferior_side_whichever_way_the_grid_runs():
    box = ((-10.0, 20.0, -40.0), (10.0, 60.0, 0.0))
    up = geometry.empty_grid((-100.0, -120.0, -80.0), (2.0, 2.0, 2.0), (100, 120, 90))
    assert atlas.mapped_box(box, sitk.Transform(), up, 10.0, 0.0) == ((20, 65, 40), (46, 96, 61))
    down = geometry.empty_grid((-100.0, -120.0, 98.0), (2.0, 2.0, 2.0), (100, 120, 90), direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    assert atlas.mapped_box(box, sitk.Transform(), down) == ((49, 70, 45), (70, 91, 56))  # z -40 lies at K 69
    assert atlas.mapped_box(box, sitk.Transform(), down, 10.0, 0.0) == ((44, 65, 40), (70, 96, 61))


def test_the_cerebellum_and_ventricle_zones_end_at_their_atlas_boxes_below_and_others_reach_past_theirs():
    grid = geometry.empty_grid((-120.0, -150.0, -120.0), (2.4, 2.4, 2.4), (100, 120, 100))
    boxes = atlas.atlas_boxes()
    for key in boxes:
        zone, core = atlas.zone_box(key, sitk.Transform(), grid), atlas.mapped_box(boxes[key], sitk.Transform(), grid)
        reach = int(atlas.ZONE_MARGIN_MM // 2.4)  # whole voxels of margin, at least
        assert zone[1][0] - core[1][0] >= reach, key  # K runs upwards on this grid
        if key in ("cerebellum", "ventricles"):  # nothing of them lies below the foramen magnum
            assert zone[0][0] == core[0][0], key
        else:
            assert core[0][0] - zone[0][0] >= reach, key


def test_only_an_image_reaching_beyond_the_training_heads_is_cut_to_their_view():
    spacing = (2.4, 2.4, 2.4)
    channels = np.zeros((1, 90, 40, 40), np.float32)
    channels[0, :80, 5:35, 5:35] = 1.0  # a head column whose top is slice 79: 192 mm above the bottom
    assert training_view_start(channels, spacing, {"below_head_top_mm": {"max": 150.0}}) == 18
    assert training_view_start(channels, spacing, {"below_head_top_mm": {"max": 185.0}}) == 0  # within 10 mm
    assert training_view_start(channels, spacing, None) == 0  # an older bundle without the figure


def test_keep_in_zones_clears_each_target_outside_its_zone_only():
    p = np.full((len(FINE_TARGETS) + 1, 6, 6, 6), 0.5, np.float32)
    zone = ((1, 1, 1), (3, 3, 3))
    cerebellum = fine_target("cerebellum")
    keep_in_zones(p, {"cerebellum": zone}, [cerebellum])
    inside = np.zeros((6, 6, 6), bool)
    inside[1:3, 1:3, 1:3] = True
    assert np.all(p[cerebellum.coarse_index][inside] == 0.5) and np.all(p[cerebellum.coarse_index][~inside] == 0)
    assert np.all(p[0] == 0.5) and np.all(p[fine_target("falx").coarse_index] == 0.5)
    keep_in_zones(p, {"falx": None}, [fine_target("falx")])  # the atlas box fell outside the image
    assert not p[fine_target("falx").coarse_index].any()


def test_clip_to_zone_keeps_a_fine_crop_only_where_it_meets_the_zone():
    box = ((10, 20, 30), (14, 26, 38))  # the crop's place on the model grid
    p = np.full((4, 6, 8), 0.7, np.float32)
    clip_to_zone(p, box, ((12, 0, 34), (40, 23, 36)))  # overlaps the crop in [12:14, 20:23, 34:36]
    inside = np.zeros(p.shape, bool)
    inside[2:4, 0:3, 4:6] = True
    assert np.all(p[inside] == 0.7) and not p[~inside].any()
    apart = np.full((4, 6, 8), 0.7, np.float32)
    assert not clip_to_zone(apart, box, ((0, 0, 0), (10, 20, 30))).any()  # touching corners only
    assert not clip_to_zone(np.ones((4, 6, 8), np.float32), box, None).any()  # no zone on the image


def test_an_implausible_registration_is_recognised():
    assert atlas.plausible(sitk.AffineTransform(3)) and atlas.plausible(_known_affine())
    for matrix in ((2.0, 0, 0, 0, 2.0, 0, 0, 0, 2.0), (0.5, 0, 0, 0, 0.5, 0, 0, 0, 0.5), (-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)):
        giant = sitk.AffineTransform(3)
        giant.SetMatrix(matrix)
        assert not atlas.plausible(giant), matrix


def _neck_in_view_bundle():
    """The demo model, its manifest told that training heads reached only 120 mm below the top of
    the head, so that the sample counts as a head with its neck in view."""
    bundle = copy.copy(load_bundle("brainbarriers-demo"))
    bundle.manifest = copy.deepcopy(bundle.manifest)
    bundle.manifest["field_of_view"] = {"below_head_top_mm": {"cases": 1, "min": 120.0, "max": 120.0}}
    return bundle


@pytest.fixture(scope="module")
def sample_as_neck_in_view():
    """The coarse stage of the demo model on the sample as a head with its neck in view, with and
    without the atlas."""
    bundle = _neck_in_view_bundle()
    images = {"t1": read_image(SAMPLE_T1, "t1")}
    found = {}
    for use in (True, False):
        segmenter = Segmenter(bundle, "cpu", SegmentOptions(atlas=use))
        prepared = segmenter.prepare(images, "t1")
        found[use] = (*segmenter.localise(prepared), prepared)
    return found


def test_with_the_neck_in_view_every_box_covers_the_registered_atlas_box(sample_as_neck_in_view):
    boxes, notes, prepared = sample_as_neck_in_view[True]
    assert any("neck in view" in n and "registered on t1" in n for n in notes), notes
    # the atlas is the sample head itself, so its boxes land on the same place of the model grid
    for key, (lo, hi) in atlas.atlas_boxes().items():
        core = atlas.mapped_box((lo, hi), sitk.Transform(), prepared.grid)
        box = boxes[key]
        slack = 2  # voxels: the sample registered onto itself lands within a few mm
        assert all(b0 <= c0 + slack and c1 - slack <= b1 for b0, c0, c1, b1 in zip(box[0], core[0], core[1], box[1])), \
            (key, box, core)


def test_with_the_neck_in_view_the_fine_stage_is_held_to_the_atlas_zones(sample_as_neck_in_view):
    boxes, _, prepared = sample_as_neck_in_view[True]
    margin = math.ceil(atlas.ZONE_MARGIN_MM / max(prepared.grid.GetSpacing()))
    for key, (lo, hi) in atlas.atlas_boxes().items():
        core = atlas.mapped_box((lo, hi), sitk.Transform(), prepared.grid)
        zone = prepared.zones[key]
        # the zone is the mapped box widened by the margin, where the grid allows
        slack = margin + 2
        assert all(z0 <= c0 and c1 <= z1 and c0 - z0 <= slack and z1 - c1 <= slack
                   for z0, c0, c1, z1 in zip(zone[0], core[0], core[1], zone[1])), (key, zone, core)


def test_without_the_atlas_the_coarse_boxes_stand_alone(sample_as_neck_in_view):
    boxes, notes, prepared = sample_as_neck_in_view[False]
    assert prepared.zones is None
    assert not any("atlas" in n for n in notes)
    with_atlas = sample_as_neck_in_view[True][0]
    assert boxes != with_atlas  # the atlas widened at least one box


@pytest.mark.parametrize("failure", ["no overlap", "a giant"])
def test_a_failed_registration_leaves_the_coarse_boxes_alone_and_says_so(sample_as_neck_in_view, monkeypatch,
                                                                          failure):
    import brainbarriers.pipeline as pipeline

    def register(*args):
        if failure == "no overlap":
            raise RuntimeError("ITK ERROR: All samples map outside moving image buffer.")
        giant = sitk.AffineTransform(3)
        giant.SetMatrix((3.0, 0, 0, 0, 3.0, 0, 0, 0, 3.0))
        return giant

    monkeypatch.setattr(pipeline, "register_atlas_to_case", register)
    segmenter = Segmenter(_neck_in_view_bundle(), "cpu", SegmentOptions())
    boxes, notes = segmenter.localise(sample_as_neck_in_view[True][2])
    assert boxes == sample_as_neck_in_view[False][0]
    assert any("atlas could not be registered" in n and "check every structure" in n for n in notes), notes
