"""The anatomical rules on drawn model-grid labels (brainbarriers.anatomy_rules)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from brainbarriers.anatomy_rules import (
    CEREBELLUM_WAIST_FRACTION,
    FALX_MARGIN_BAND_MM,
    HEAD_MARGIN_MM,
    MAX_UNSUPPORTED_BRIDGE_MM,
    NEAR_MIDLINE_MM,
    apply_anatomy_rules,
    cerebellum_above_waist,
    drop_outside_head,
    falx_above_ventricle_roof,
    join_sagittal_sinus,
    ventricles_above_cerebellum_base,
)

FALX, VENTRICLES = 2, 5
SPACING = (2.0, 2.0, 2.0)


def drawn_head() -> np.ndarray:
    """K (up), J (back), I (left); midline I = 20. Ventricle bodies beside the midline at K 14-17,
    J 10-24; an atrium far out at J 25-34; the falx a midline sheet from K 20 up, running down to
    K 8 behind the bodies (towards the straight sinus), and a stray piece under the bodies."""
    labels = np.zeros((40, 40, 41), np.uint8)
    labels[14:18, 10:25, 16:20] = labels[14:18, 10:25, 21:25] = VENTRICLES
    labels[12:20, 25:35, 6:10] = VENTRICLES  # atrium: 22-28 mm from the midline
    labels[20:36, 4:36, 20] = FALX
    labels[8:20, 25:36, 20] = FALX  # the posterior falx, down beside the atria
    labels[8:13, 12:20, 20] = FALX  # under the bodies: not falx
    return labels


def test_falx_under_the_ventricle_bodies_is_dropped_and_the_rest_kept():
    labels = drawn_head()
    out = falx_above_ventricle_roof(labels, SPACING, FALX, VENTRICLES)
    assert not (out[8:13, 12:20, 20] == FALX).any()  # the stray piece is gone
    assert (out[20:36, 4:36, 20] == FALX).all()  # the sheet above the roof stays
    assert (out[8:20, 25:36, 20] == FALX).all()  # beside the atria the falx may run low
    assert np.array_equal(out == VENTRICLES, labels == VENTRICLES)  # nothing else changes
    changed = out != labels
    assert np.array_equal(changed, (labels == FALX) & (out == 0))
    assert changed.sum() == 5 * 8


def test_the_midline_follows_the_falx_and_far_ventricles_do_not_count():
    labels = drawn_head()
    atrium_distance_mm = (20 - 9) * SPACING[0]
    assert atrium_distance_mm > NEAR_MIDLINE_MM  # the drawn atrium is beyond the near-midline band
    shifted = np.roll(labels, 6, axis=2)  # the head off the grid's centre: the rule moves with it
    out = falx_above_ventricle_roof(shifted, SPACING, FALX, VENTRICLES)
    assert np.array_equal(np.roll(out, -6, axis=2), falx_above_ventricle_roof(labels, SPACING, FALX, VENTRICLES))


def test_without_falx_or_ventricles_nothing_changes():
    labels = drawn_head()
    no_ventricles = np.where(labels == VENTRICLES, 0, labels).astype(np.uint8)
    assert np.array_equal(falx_above_ventricle_roof(no_ventricles, SPACING, FALX, VENTRICLES), no_ventricles)
    no_falx = np.where(labels == FALX, 0, labels).astype(np.uint8)
    assert np.array_equal(falx_above_ventricle_roof(no_falx, SPACING, FALX, VENTRICLES), no_falx)


def test_the_pipeline_applies_the_rule_only_when_both_structures_are_segmented():
    labels = drawn_head()
    grid = sitk.Image(labels.shape[::-1], sitk.sitkUInt8)
    grid.SetSpacing(SPACING)
    assert np.array_equal(apply_anatomy_rules(labels, grid, [FALX]), labels)  # falx alone: no roof to use
    both = apply_anatomy_rules(labels, grid, [1, FALX, 3, 4, VENTRICLES])
    assert not (both[8:13, 12:20, 20] == FALX).any()


def test_labels_in_the_air_beyond_the_margin_are_dropped_and_dark_parts_of_the_head_kept():
    """A ball head on a T1-like channel (bright brain and scalp, a dark skull ring between, 2 mm
    voxels): a label under the skull stays, one 20 mm out in the air goes, a missing input (all-zero
    channel) changes nothing."""
    shape = (40, 40, 40)
    k, j, i = np.indices(shape)
    radius = np.sqrt((k - 20) ** 2 + (j - 20) ** 2 + (i - 20) ** 2)  # voxels
    t1 = np.zeros(shape, np.float32)
    t1[radius <= 12] = 1.0  # brain
    t1[(radius > 14) & (radius <= 16)] = 0.8  # scalp; the skull (12-14) stays dark
    channels = np.stack([np.zeros(shape, np.float32), t1])
    labels = np.zeros(shape, np.uint8)
    under_skull = (radius > 12) & (radius <= 14) & (k > 30)
    labels[under_skull] = 3
    labels[36:39, 2:4, 2:4] = 3  # a corner of the air, > 10 mm from the scalp
    nearest_corner_mm = (np.linalg.norm(np.array([36, 3, 3]) - 20) - 16) * 2.0  # to the scalp's outside
    assert nearest_corner_mm > HEAD_MARGIN_MM
    out = drop_outside_head(labels, channels, SPACING)
    assert (out[under_skull] == 3).all()
    assert not out[36:39, 2:4, 2:4].any()
    assert np.array_equal(drop_outside_head(labels, np.zeros_like(channels), SPACING), labels)
    grid = sitk.Image(shape[::-1], sitk.sitkUInt8)
    grid.SetSpacing(SPACING)
    assert not apply_anatomy_rules(labels, grid, [3], channels)[36:39, 2:4, 2:4].any()
    assert np.array_equal(apply_anatomy_rules(labels, grid, [3]), labels)  # no channels: no head rule


def test_a_large_dark_ventricle_inside_the_brain_counts_as_head():
    """Hydrocephalus on MR: ventricles 40 mm across, dark like the air, their centre 20 mm from any
    bright tissue. Enclosed by the brain, they are head, and their label stays."""
    shape = (50, 50, 50)
    k, j, i = np.indices(shape)
    radius = np.sqrt((k - 25) ** 2 + (j - 25) ** 2 + (i - 25) ** 2)
    t1 = np.zeros(shape, np.float32)
    t1[radius <= 20] = 1.0
    t1[radius <= 10] = 0.0  # the dark ventricles: 20 mm from the brain at their centre
    labels = np.where(radius <= 10, VENTRICLES, 0).astype(np.uint8)
    out = drop_outside_head(labels, t1[None], SPACING)
    assert np.array_equal(out, labels)


SINUS = 3


def components(mask: np.ndarray) -> int:
    """Number of 26-connected components (SimpleITK, as the rules count them)."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    return int(sitk.GetArrayFromImage(sitk.ConnectedComponent(image, True)).max())


def arched_sinus(gap: tuple[int, int], with_falx: bool = True):
    """K (up), J (back), I (left), midline I = 10. The falx a midline sheet whose upper edge arches
    from K 20 at the poles to K 30 at J 25; the sinus two voxels above that edge, I 9-11, with the
    network's probability 0.9 on it except over ``gap`` (J range), where it lost the vessel (0)."""
    labels = np.zeros((40, 51, 21), np.uint8)
    probability = np.zeros(labels.shape, np.float32)
    edge = {j: 20 + round(10 * np.sin(np.pi * j / 50)) for j in range(51)}
    for j, top in edge.items():
        if with_falx:
            labels[10:top + 1, j, 10] = FALX
        if not gap[0] <= j < gap[1]:
            probability[top + 1:top + 3, j, 9:12] = 0.9
    labels[(probability > 0.5) & (labels == 0)] = SINUS
    return labels, probability, edge


def test_a_lost_stretch_of_the_sagittal_sinus_is_traced_along_the_falx_margin():
    """A 36 mm gap at the vertex, where the straight chord between the pieces would cut into the
    falx: the bridge follows the band above the falx's upper edge, and the sinus is one vessel."""
    labels, probability, edge = arched_sinus((16, 34))
    assert components(labels == SINUS) == 2
    box = ((0, 0, 0), labels.shape)
    out = join_sagittal_sinus(labels, probability, box, SPACING, SINUS, FALX)
    assert components(out == SINUS) == 1
    assert np.array_equal(out == FALX, labels == FALX)  # the falx is not overwritten
    assert np.array_equal(out[labels == SINUS], labels[labels == SINUS])  # the pieces stay
    band = round(FALX_MARGIN_BAND_MM / SPACING[0])
    added = np.argwhere((out == SINUS) & (labels != SINUS))
    # on the falx's margin: beside its edge at the lowest (the vessel's thickening), never far above it
    assert len(added) and all(edge[j] - 1 <= k <= edge[j] + band + 1 for k, j, _ in added)
    assert all(out[edge[j] + 1:edge[j] + band + 1, j, 10].any() for j in range(16, 34))  # every lost slice


def test_the_descent_to_the_torcula_is_traced_behind_the_falxs_posterior_edge():
    """The sinus runs over the falx and then down behind its posterior edge to the torcula; the
    network lost 28 mm of the descent, farther than an unsupported bridge may run. The band behind
    the falx's posterior edge carries the bridge down, and the sinus is one vessel."""
    labels = np.zeros((40, 51, 21), np.uint8)
    probability = np.zeros(labels.shape, np.float32)
    labels[10:31, 5:41, 10] = FALX  # upper edge K 30, posterior edge J 40
    probability[31:33, 5:43, 9:12] = 0.9  # over the falx to behind its back
    probability[8:33, 41:43, 9:12] = 0.9  # the descent behind the posterior edge ...
    probability[14:28, 41:43, 9:12] = 0.0  # ... lost over 14 slices (28 mm)
    labels[(probability > 0.5) & (labels == 0)] = SINUS
    assert components(labels == SINUS) == 2
    assert 14 * SPACING[0] > MAX_UNSUPPORTED_BRIDGE_MM
    out = join_sagittal_sinus(labels, probability, ((0, 0, 0), labels.shape), SPACING, SINUS, FALX)
    assert components(out == SINUS) == 1
    assert np.array_equal(out == FALX, labels == FALX)
    band = round(FALX_MARGIN_BAND_MM / SPACING[1])
    added = np.argwhere((out == SINUS) & (labels != SINUS))
    assert len(added) and all(40 <= j <= 41 + band for _, j, _ in added)  # behind the edge, not out in the occiput
    assert all(out[k, 41:41 + band, 10].any() for k in range(14, 28))  # every lost slice


def test_without_support_only_a_short_gap_is_bridged():
    """No falx: a gap longer than MAX_UNSUPPORTED_BRIDGE_MM stays open, a shorter one is bridged."""
    box = ((0, 0, 0), (40, 51, 21))
    long_gap = (16, 16 + int(MAX_UNSUPPORTED_BRIDGE_MM / SPACING[1]) + 3)
    labels, probability, _ = arched_sinus(long_gap, with_falx=False)
    out = join_sagittal_sinus(labels, probability, box, SPACING, SINUS, FALX)
    assert components(out == SINUS) == 2 and np.array_equal(out, labels)
    labels, probability, _ = arched_sinus((22, 26), with_falx=False)  # 8 mm
    assert components(join_sagittal_sinus(labels, probability, box, SPACING, SINUS, FALX) == SINUS) == 1


def test_the_join_stays_in_the_networks_box_and_merges_side_by_side_tracks():
    labels, probability, _ = arched_sinus((16, 34))
    full = np.zeros((50, 60, 30), np.uint8)
    full[5:45, 2:53, 4:25] = labels
    full[0, 0, 0] = full[49, 59, 29] = SINUS  # outside the box: left alone
    box = ((5, 2, 4), (45, 53, 25))
    out = join_sagittal_sinus(full, probability, box, SPACING, SINUS, FALX)
    assert out[0, 0, 0] == out[49, 59, 29] == SINUS
    assert np.array_equal(out[5:45, 2:53, 4:25], join_sagittal_sinus(labels, probability, ((0, 0, 0), labels.shape),
                                                                      SPACING, SINUS, FALX))
    # the vessel segmented twice, one voxel apart: one vessel after the rule
    tracks = np.zeros((20, 30, 20), np.uint8)
    tracks[10:12, 2:28, 8] = tracks[10:12, 2:28, 10] = SINUS
    p = np.where(tracks == SINUS, 0.9, 0.0).astype(np.float32)
    assert components(tracks == SINUS) == 2
    assert components(join_sagittal_sinus(tracks, p, ((0, 0, 0), tracks.shape), SPACING, SINUS) == SINUS) == 1


def test_a_thin_diagonal_run_reaches_a_finer_input_grid_in_one_piece(tiny_bundle):
    """A thin diagonal run on the 2.4 mm model grid would fall apart into specks on a 1 mm input
    grid under the linear rule alone (the clean-up then dropped them); the nearest-neighbour
    fallback for thin labels keeps it whole, with or without the clean-up."""
    from brainbarriers.bundles import load_bundle
    from brainbarriers.pipeline import Segmenter, SegmentOptions, labels_to_reference

    grid = sitk.Image(30, 30, 30, sitk.sitkUInt8)
    grid.SetSpacing((2.4, 2.4, 2.4))
    reference = sitk.Image(72, 72, 72, sitk.sitkInt16)
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[5:15, 5:15, 5:15] = SINUS
    for n in range(1, 8):
        labels[14 + n, 14 + n, 14 + n] = SINUS  # touches the block and itself at corners only
    linear = sitk.GetArrayFromImage(labels_to_reference(labels, grid, reference, thin=())) == SINUS
    assert components(linear) > 1
    bundle = load_bundle(tiny_bundle)
    for options in (SegmentOptions(cleanup=False), SegmentOptions()):
        out = Segmenter(bundle, "cpu", options).postprocess(labels, grid, reference)
        sinus = sitk.GetArrayFromImage(out) == SINUS
        assert components(sinus) == 1 and out.GetSize() == reference.GetSize()
        assert sinus[48:53, 48:53, 48:53].any()  # the run's far end (model voxel 21) is drawn


def test_the_rules_run_without_scipy():
    """The core package runs in Slicer and from its wheel, neither of which brings scipy: the rules
    (and the pipeline module that applies them) must not need it."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['scipy'] = None\n"  # any import of scipy now fails
        "import numpy as np, SimpleITK as sitk\n"
        "from brainbarriers.pipeline import apply_anatomy_rules\n"
        "labels = np.zeros((20, 20, 20), np.uint8); labels[8:12, 8:12, 8:12] = 5; labels[0, 0, 0] = 2\n"
        "channels = np.zeros((1, 20, 20, 20), np.float32); channels[0, 5:15, 5:15, 5:15] = 1\n"
        "grid = sitk.Image(20, 20, 20, sitk.sitkUInt8); grid.SetSpacing((2.0, 2.0, 2.0))\n"
        "out = apply_anatomy_rules(labels, grid, [2, 5], channels)\n"
        "assert out[0, 0, 0] == 0 and (out[8:12, 8:12, 8:12] == 5).all()\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


CEREBELLUM = 1


def ellipsoid(shape, centre, radii) -> np.ndarray:
    k, j, i = np.indices(shape)
    return sum(((g - c) / r) ** 2 for g, c, r in zip((k, j, i), centre, radii)) <= 1


def test_a_second_mass_below_a_waist_is_cut_off_the_cerebellum():
    """A cerebellum-shaped mass (K 30-46) joined through a narrow stalk to a neck column below
    (K 0-26), as the networks draw it with the neck in view: only the upper mass stays."""
    shape = (50, 40, 40)
    upper = ellipsoid(shape, (38, 26, 20), (8, 9, 15))
    column = ellipsoid(shape, (12, 24, 20), (14, 8, 10))
    stalk = np.zeros(shape, bool)
    stalk[24:32, 23:26, 19:22] = True
    labels = np.zeros(shape, np.uint8)
    labels[upper | column | stalk] = CEREBELLUM
    labels[47:49, 10:30, 10:30] = 4  # a tentorium above: never touched
    out = cerebellum_above_waist(labels, CEREBELLUM)
    assert (out[upper] == CEREBELLUM).all()
    assert not (out[column] == CEREBELLUM).any()
    assert np.array_equal(out == 4, labels == 4)
    # in the pipeline's rules too, when the cerebellum is segmented; not when it is not
    grid = sitk.Image(shape[::-1], sitk.sitkUInt8)
    assert np.array_equal(apply_anatomy_rules(labels, grid, [CEREBELLUM, 4]), out)
    assert np.array_equal(apply_anatomy_rules(labels, grid, [4]), labels)


def test_a_whole_cerebellum_and_a_thin_tail_are_left_alone():
    """One mass narrowing to the tonsils; a thin tail below it (under the lower-mass share); a
    mass whose narrowing stays above the waist fraction: nothing is cut."""
    shape = (50, 40, 40)
    whole = ellipsoid(shape, (30, 26, 20), (10, 9, 15))
    labels = np.where(whole, CEREBELLUM, 0).astype(np.uint8)
    assert np.array_equal(cerebellum_above_waist(labels, CEREBELLUM), labels)
    tail = labels.copy()
    tail[12:21, 25:28, 19:22] = CEREBELLUM  # 81 voxels, far below 10 % of the mass
    assert np.array_equal(cerebellum_above_waist(tail, CEREBELLUM), tail)
    # two masses joined by a broad neck (half the largest cross-section): one structure
    broad = np.zeros(shape, np.uint8)
    lower = ellipsoid(shape, (14, 26, 20), (8, 9, 15))
    broad[whole | lower] = CEREBELLUM
    bridge = ellipsoid(shape, (21, 26, 20), (4, 9, 15))
    broad[bridge] = CEREBELLUM
    areas = (broad == CEREBELLUM).sum(axis=(1, 2))
    assert areas[18:25].min() > CEREBELLUM_WAIST_FRACTION * areas.max()
    assert np.array_equal(cerebellum_above_waist(broad, CEREBELLUM), broad)
    assert np.array_equal(cerebellum_above_waist(np.zeros(shape, np.uint8), CEREBELLUM), np.zeros(shape, np.uint8))


def test_no_ventricles_below_the_cerebellum():
    """The fourth ventricle in front of the cerebellum stays; 'ventricles' in the spinal canal
    below the cerebellum's lowest slice go; without a cerebellum nothing changes."""
    shape = (50, 40, 40)
    labels = np.zeros(shape, np.uint8)
    labels[ellipsoid(shape, (30, 28, 20), (10, 8, 15))] = CEREBELLUM
    labels[26:34, 18:21, 19:22] = VENTRICLES  # fourth ventricle, in front
    labels[5:19, 22:25, 19:22] = VENTRICLES  # spinal canal, below
    out = ventricles_above_cerebellum_base(labels, CEREBELLUM, VENTRICLES)
    assert (out[26:34, 18:21, 19:22] == VENTRICLES).all()
    assert not (out[:20] == VENTRICLES).any()
    assert np.array_equal(out[labels != VENTRICLES], labels[labels != VENTRICLES])
    no_cerebellum = np.where(labels == CEREBELLUM, 0, labels).astype(np.uint8)
    assert np.array_equal(ventricles_above_cerebellum_base(no_cerebellum, CEREBELLUM, VENTRICLES), no_cerebellum)
    grid = sitk.Image(shape[::-1], sitk.sitkUInt8)
    assert np.array_equal(apply_anatomy_rules(labels, grid, [CEREBELLUM, VENTRICLES]), out)
    assert np.array_equal(apply_anatomy_rules(labels, grid, [VENTRICLES]), labels)
