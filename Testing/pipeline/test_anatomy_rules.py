"""The anatomical rules on drawn model-grid labels (brainbarriers.anatomy_rules)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from brainbarriers.anatomy_rules import (
    HEAD_MARGIN_MM,
    NEAR_MIDLINE_MM,
    apply_anatomy_rules,
    drop_outside_head,
    falx_above_ventricle_roof,
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
