"""scripts/demo_calibrate_coarse.py: the fast offset sweep gives the figures of scoring every trial by argmax."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def calibrate():
    spec = importlib.util.spec_from_file_location("demo_calibrate_coarse", REPO / "scripts" / "demo_calibrate_coarse.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def argmax_box_iou(calibrate, logits, labels, c, off) -> float:
    """The definition: label by argmax(logit + off), IoU of class c's boxes, mean over cases."""
    return float(np.mean([calibrate.box_iou((lg + off[:, None, None, None]).argmax(0) == c, lab == c)
                          for lg, lab in zip(logits, labels)]))


def test_the_sweep_equals_argmax_scoring_also_where_classes_tie(calibrate):
    rng = np.random.default_rng(0)
    n = 5
    # logits on a quarter grid, as the offsets are, so that logit + offset ties between classes are common
    # background ahead, so that each class wins few voxels and one voxel more or less moves its box
    logits = [(np.round(rng.normal(0, 1.0, (n, 6, 7, 5)) * 4) / 4).astype(np.float32) for _ in range(6)]
    for lg in logits:
        lg[0] += 1.5
    labels = []
    for _ in logits:
        lab = np.zeros((6, 7, 5), int)
        for c in range(1, n):
            lo = rng.integers(0, 3, 3)
            lab[lo[0]:lo[0] + 3, lo[1]:lo[1] + 3, lo[2]:lo[2] + 2] = c
        labels.append(lab)
    labels[1][labels[1] == 3] = 0  # a class missing from one case
    boxes = [{c: calibrate.bounding_box(lab == c) for c in range(1, n)} for lab in labels]
    off = np.array([0.0, 0.5, 1.25, 0.0, 0.75])
    trials = calibrate.OFFSETS
    ties = 0
    for c in range(1, n):
        fast = calibrate.sweep(logits, boxes, c, off, trials)
        for o, got in zip(trials, fast):
            trial = off.copy()
            trial[c] = o
            assert got == argmax_box_iou(calibrate, logits, labels, c, trial), (c, o)
            shifted = logits[0] + trial[:, None, None, None]
            ties += int((np.sort(shifted, 0)[-1] == np.sort(shifted, 0)[-2]).sum())
    assert ties > 100  # the tie-breaking rule was exercised


def test_bounding_box_and_box_iou(calibrate):
    mask = np.zeros((6, 7, 8), bool)
    mask[1:3, 2:6, 4] = True
    lo, hi = calibrate.bounding_box(mask)
    assert lo.tolist() == [1, 2, 4] and hi.tolist() == [3, 6, 5]
    assert calibrate.bounding_box(np.zeros((3, 3, 3), bool)) is None
    other = np.zeros_like(mask)
    other[2:3, 2:6, 4] = True
    assert calibrate.box_iou(mask, other) == pytest.approx(0.5)
    assert calibrate.box_iou(mask, np.zeros_like(mask)) == 0.0
