"""The anatomical rules on drawn model-grid labels (brainbarriers.anatomy_rules)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from brainbarriers.anatomy_rules import NEAR_MIDLINE_MM, falx_above_ventricle_roof
from brainbarriers.pipeline import apply_anatomy_rules

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
