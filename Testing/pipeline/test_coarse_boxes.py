"""Coarse boxes and clean-up: the fallback for a target that loses the argmax, small true
components kept, and test-time flips limited to what training saw."""

from __future__ import annotations

import numpy as np
from brainbarriers import geometry
from brainbarriers.pipeline import (
    FALLBACK_PROBABILITY,
    LR_AXIS,
    PEAK_FLOOR,
    Segmenter,
    SegmentOptions,
    cleanup_labels,
    coarse_boxes,
    coarse_region,
)
from brainbarriers.structures import FINE_TARGETS, fine_target


def _probabilities(shape=(20, 24, 22)) -> np.ndarray:
    """Coarse softmax where the tentorium wins everywhere on its sheet, and the transverse sinus,
    lying on it, keeps only a 0.3 probability of its own (the measured failure at 4.8 mm)."""
    p = np.zeros((len(FINE_TARGETS) + 1, *shape), np.float32)
    p[0] = 1.0
    tent, trans = fine_target("tentorium").coarse_index, fine_target("transverse_sinus").coarse_index
    sheet = (slice(8, 10), slice(4, 20), slice(3, 19))
    p[0][sheet] = 0.1
    p[tent][sheet] = 0.6
    p[trans][sheet] = 0.3
    return p


def test_a_target_that_loses_the_argmax_gets_a_box_from_its_own_probability():
    p = _probabilities()
    region, how = coarse_region(p, fine_target("transverse_sinus").coarse_index)
    assert how == "fallback" and region.sum() == 2 * 16 * 16 and 0.3 >= FALLBACK_PROBABILITY
    region, how = coarse_region(p, fine_target("tentorium").coarse_index)
    assert how == "argmax" and region.sum() == 2 * 16 * 16
    region, how = coarse_region(p, fine_target("ventricles").coarse_index)
    assert how == "missing" and not region.any()


def test_a_target_under_the_fallback_probability_gets_a_box_from_half_its_own_peak():
    """The smoke recipe's coarse network on an Intel Xeon: the transverse sinus peaked at 0.185 on
    every held-out phantom, under FALLBACK_PROBABILITY, and its box went missing."""
    p = _probabilities()
    tent, trans = fine_target("tentorium").coarse_index, fine_target("transverse_sinus").coarse_index
    p[trans] = 0.0
    core = (slice(8, 10), slice(6, 18), slice(5, 17))
    p[trans][8:10, 4:20, 3:19] = 0.06  # a rim under half the peak
    p[trans][core] = 0.185
    region, how = coarse_region(p, trans)
    assert 0.185 < FALLBACK_PROBABILITY and how == "fallback"
    assert region.sum() == 2 * 12 * 12 and region[core].all()  # the core, not the rim
    assert coarse_region(p, tent)[1] == "argmax"
    p[trans] *= 0.9 * PEAK_FLOOR / 0.185  # a peak under the floor is noise: no box
    region, how = coarse_region(p, trans)
    assert how == "missing" and not region.any()
    p[trans] = 1 / 7  # flat: a network that says nothing about the target marks no region
    p[trans][core] = 0.185
    region, how = coarse_region(p, trans)
    assert how == "missing" and not region.any()


def test_boxes_are_mapped_onto_the_model_grid_with_margins():
    p = _probabilities()
    coarse = geometry.empty_grid((0, 0, 0), (4.8, 4.8, 4.8), (22, 24, 20))
    grid = geometry.empty_grid((-1.2, -1.2, -1.2), (2.4, 2.4, 2.4), (44, 48, 40))
    targets = [fine_target("transverse_sinus"), fine_target("ventricles")]
    boxes, how = coarse_boxes(p, coarse, grid, targets, {"transverse_sinus": 2, "ventricles": 2})
    assert how == {"transverse_sinus": "fallback", "ventricles": "missing"} and boxes["ventricles"] is None
    # coarse voxels 8..9 (k), 4..19 (j), 3..18 (i) cover model voxels 16..19, 8..39, 6..37; +2 margin
    # (a box edge that falls on a voxel boundary may take one more voxel: boxes err on the large side)
    lo, hi = boxes["transverse_sinus"]
    assert lo == (14, 6, 4) and all(0 <= h - e <= 1 for h, e in zip(hi, (22, 42, 40)))


def test_clean_up_keeps_a_small_true_component_and_drops_specks():
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[5:25, 5:25, 5:25] = 5  # lateral ventricles: 8000 voxels
    labels[30:36, 30:36, 30:36] = 5  # a 4th ventricle: 216 voxels, 2.7 % of the largest
    labels[2, 38, 2] = 5  # a stray voxel
    out = cleanup_labels(labels, [5])
    assert (out[30:36, 30:36, 30:36] == 5).all() and out[2, 38, 2] == 0 and (out[5:25, 5:25, 5:25] == 5).all()


def test_full_quality_flips_only_left_right(tmp_path):
    from brainbarriers.bundles import load_bundle
    from tiny_bundle import write_tiny_bundle

    bundle = load_bundle(write_tiny_bundle(tmp_path / "b"))
    assert Segmenter(bundle, "cpu", SegmentOptions(quality="full"))._flip_axes() == (LR_AXIS,) == (2,)
    assert Segmenter(bundle, "cpu", SegmentOptions(quality="fast"))._flip_axes() == ()


def test_a_network_the_bundle_names_is_flip_averaged_at_every_quality(tmp_path):
    import pytest
    import SimpleITK as sitk
    from brainbarriers.bundles import load_bundle
    from brainbarriers.errors import BundleError
    from tiny_bundle import tiny_manifest, write_tiny_bundle

    bundle = load_bundle(write_tiny_bundle(tmp_path / "b", max_crop=(16, 16, 16),
                                           test_time_flips={"sagittal_sinus": ["LR"]}))
    assert bundle.network_spec("sagittal_sinus")["test_time_flips"] == ["LR"]
    grid = sitk.Image(40, 40, 40, sitk.sitkFloat32)
    grid.SetSpacing((1.2, 1.2, 1.2))
    crop = np.random.default_rng(1).normal(0, 1, (3, 16, 16, 16)).astype(np.float32)
    fast = Segmenter(bundle, "cpu", SegmentOptions(quality="fast"))
    sinus, ventricles = fine_target("sagittal_sinus"), fine_target("ventricles")
    mirrored = fast.fine_probability(sinus, crop, grid, flips=(LR_AXIS,))
    plain = fast.fine_probability(sinus, crop, grid, flips=())
    assert not np.allclose(mirrored, plain, atol=1e-6)  # random weights are not symmetric
    np.testing.assert_array_equal(fast.fine_probability(sinus, crop, grid), mirrored)
    # the other networks keep the quality option's flips: none when fast, left-right when full
    np.testing.assert_array_equal(fast.fine_probability(ventricles, crop, grid),
                                  fast.fine_probability(ventricles, crop, grid, flips=()))
    full = Segmenter(bundle, "cpu", SegmentOptions(quality="full"))
    np.testing.assert_array_equal(full.fine_probability(ventricles, crop, grid),
                                  full.fine_probability(ventricles, crop, grid, flips=(LR_AXIS,)))
    np.testing.assert_array_equal(full.fine_probability(sinus, crop, grid), mirrored)
    for flips, words in [({"sagittal_sinus": ["AP"]}, "is not one of"), ({"nothing": ["LR"]}, "without a network")]:
        with pytest.raises((BundleError, ValueError), match=words):
            tiny_manifest(test_time_flips=flips, structures=["sagittal_sinus"] if "nothing" in flips else None)


def test_the_tile_overlap_option_sets_how_many_tiles_cover_a_fine_crop(tmp_path):
    import pytest
    import SimpleITK as sitk
    from brainbarriers.bundles import load_bundle
    from brainbarriers.errors import InputError
    from tiny_bundle import write_tiny_bundle

    bundle = load_bundle(write_tiny_bundle(tmp_path / "b", max_crop=(16, 16, 16)))
    grid = sitk.Image(40, 40, 40, sitk.sitkFloat32)
    grid.SetSpacing((1.2, 1.2, 1.2))
    crop = np.random.default_rng(0).normal(0, 1, (3, 16, 40, 16)).astype(np.float32)  # longer than the window along J
    forwards = {}
    for overlap in (0.25, 0.5):
        segmenter = Segmenter(bundle, "cpu", SegmentOptions(tile_overlap=overlap))
        count = [0]
        forward = segmenter.runner.forward

        def counted(net, x, forward=forward, count=count):
            count[0] += x.shape[0]
            return forward(net, x)

        segmenter.runner.forward = counted
        prob = segmenter.fine_probability(fine_target("ventricles"), crop, grid)
        assert prob.shape == crop.shape[1:] and np.isfinite(prob).all()
        forwards[overlap] = count[0]
    # J: starts 0, 12, 24 at a quarter's overlap; 0, 8, 16, 24 at half
    assert forwards == {0.25: 3, 0.5: 4}
    with pytest.raises(InputError, match="tile overlap 1.0 is not a fraction"):
        Segmenter(bundle, "cpu", SegmentOptions(tile_overlap=1.0))


def test_grow_box_reaches_the_training_window_inside_the_image():
    # centred growth; shifted back inside at the border; an axis shorter than the window is taken whole
    assert geometry.grow_box(((10, 10, 10), (14, 30, 12)), (8, 16, 6), (40, 40, 40)) == ((8, 10, 8), (16, 30, 14))
    assert geometry.grow_box(((0, 35, 0), (2, 40, 2)), (8, 8, 8), (40, 40, 5)) == ((0, 32, 0), (8, 40, 5))


def test_networks_trained_on_fixed_windows_declare_them_for_inference():
    from brainbarriers_training.config import load_recipe
    from brainbarriers_training.engine import network_spec

    recipe = load_recipe("smoke")
    spec = network_spec(recipe, fine_target("falx"))
    assert spec["window"] == list(recipe.fine.patch_size["falx"])
    assert "window" not in network_spec(load_recipe("paper"), fine_target("falx"))  # whole-box crops: no window
