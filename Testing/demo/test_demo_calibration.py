"""scripts/demo_calibrate_coarse.py: the fast offset sweep gives the figures of scoring every trial by argmax."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from brainbarriers.networks import build
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def calibrate():
    return SimpleNamespace(**runpy.run_path(str(REPO / "scripts" / "demo_calibrate_coarse.py")))


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


def test_the_bench_times_both_searches_on_a_small_build(tmp_path):
    # a small coarse network and cache in the layout a demo build leaves
    spec = {"architecture": "coarse-unet", "in_channels": 3, "out_channels": 4,
            "options": {"levels": 2, "base_width": 4, "max_width": 8}}
    coarse = tmp_path / "run" / "coarse"
    coarse.mkdir(parents=True)
    (coarse / "network.json").write_text(json.dumps(spec))
    torch.manual_seed(0)
    net = build(spec["architecture"], 3, 4, **spec["options"])
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(coarse / "final.safetensors"))
    rng = np.random.default_rng(0)
    (tmp_path / "cache").mkdir()
    for case in range(3):
        label = np.zeros((12, 14, 10), np.int64)
        label[2:8, 3:9, 2:6] = 1 + case % 3
        np.savez(tmp_path / "cache" / f"{case:03d}.npz", coarse_image=rng.normal(size=(3, 12, 14, 10)).astype(np.float32),
                 coarse_label=label)
    run = subprocess.run([sys.executable, str(REPO / "bench" / "bench_calibration.py"), "--workdir", str(tmp_path / "run"),
                          "--cache", str(tmp_path / "cache"), "--cases", "2"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "the same scores" in run.stdout and "2 cases x 2 input sets, 3 classes x 33 offsets" in run.stdout
    assert run.stdout.count("projected calibration on the cache's 3 cases") == 2
