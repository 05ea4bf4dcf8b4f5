"""Post-hoc logit adjustment of the demo coarse network (localisation only).

The demo's short coarse training leaves the thin classes (falx, sinus parts, tentorium)
under-confident: their probability inside the structure is 10-100x higher than outside, but
rarely beats background, so the argmax finds no box. The coarse stage is only used for boxes,
so this script adds one constant per class to the bias of the full-resolution output head
(a per-class decision threshold: logit adjustment), chosen on the training cases to maximise
the IoU of each class's box with the true box (all inputs and T1 only averaged), by coordinate ascent over a grid.
The original weights are kept as final_uncalibrated.safetensors.

Usage: python scripts/demo_calibrate_coarse.py WORKDIR CACHE
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from brainbarriers.networks import build
from brainbarriers.networks.padding import predict_padded
from safetensors.torch import load_file, save_file

OFFSETS = np.arange(0.0, 8.01, 0.25)
SUBSETS = {"all": [], "t1": [0, 2]}  # channels zeroed (CT=0, T1=1, T2=2)


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(first, one past last) index per axis of a mask's voxels; None when it is empty."""
    lo, hi = [], []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not hits.size:
            return None
        lo.append(hits[0])
        hi.append(hits[-1] + 1)
    return np.array(lo), np.array(hi)


def iou_of_boxes(a, b) -> float:
    """IoU of two bounding boxes (0 when either is missing): what the pipeline uses."""
    if a is None or b is None:
        return 0.0
    (lo_a, hi_a), (lo_b, hi_b) = a, b
    inter = np.prod(np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None))
    union = np.prod(hi_a - lo_a) + np.prod(hi_b - lo_b) - inter
    return float(inter / union)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the bounding boxes of two masks (0 when either is empty)."""
    return iou_of_boxes(bounding_box(a), bounding_box(b))


def sweep(logits: list[np.ndarray], true_boxes: list[dict], c: int, off: np.ndarray, trials) -> list[float]:
    """Mean box IoU of class c over the cases for each offset of c in trials, the others' at off.

    The labels are argmax(logit + off) (float64, as float32 logits plus float64 offsets are).
    That is c exactly where logit_c + o beats every lower class and is not below any higher one
    (argmax keeps the first of equal values), so the best rival on each side is found once per
    case and each trial costs two comparisons: the figures of scoring every trial by argmax
    (Testing/demo/test_demo_calibration.py), many times faster.
    """
    n = logits[0].shape[0]
    ious: list[list[float]] = [[] for _ in trials]
    for lg, boxes in zip(logits, true_boxes):
        shifted = lg + off[:, None, None, None]
        below = shifted[:c].max(0)
        above = shifted[c + 1:].max(0) if c + 1 < n else np.full(below.shape, -np.inf)
        own = lg[c].astype(np.float64)
        for i, o in enumerate(trials):
            v = own + o
            ious[i].append(iou_of_boxes(bounding_box((v > below) & (v >= above)), boxes[c]))
    return [float(np.mean(row)) for row in ious]


def coarse_network(coarse: Path, state: dict) -> torch.nn.Module:
    """The coarse network of a run's ``coarse`` folder (its network.json) with ``state``, in eval mode."""
    spec = json.loads((coarse / "network.json").read_text())
    net = build(spec["architecture"], spec["in_channels"], spec["out_channels"], **spec["options"])
    net.load_state_dict(state)
    return net.eval()


def coarse_logits(net: torch.nn.Module, files: list[Path]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(logits, coarse labels) of each cached case, once per input subset of SUBSETS."""
    logits, labels = [], []
    for f in files:
        d = np.load(f)
        x = torch.from_numpy(d["coarse_image"])[None]
        for drop in SUBSETS.values():
            xx = x.clone()
            xx[:, drop] = 0
            with torch.inference_mode():
                logits.append(predict_padded(net, xx)[0].numpy())
            labels.append(d["coarse_label"])
    return logits, labels


def main(workdir: str, cache: str) -> int:
    torch.set_num_threads(1)
    coarse = Path(workdir) / "coarse"
    original = coarse / "final_uncalibrated.safetensors"
    if not original.exists():
        shutil.copy(coarse / "final.safetensors", original)
    state = load_file(str(original))
    net = coarse_network(coarse, state)
    head = f"heads.{len(net.heads) - 1}.bias"
    logits, labels = coarse_logits(net, sorted(Path(cache).glob("*.npz")))
    n = logits[0].shape[0]
    offset = np.zeros(n)
    true_boxes = [{c: bounding_box(lab == c) for c in range(1, n)} for lab in labels]

    def score(c: int, off: np.ndarray) -> float:
        return sweep(logits, true_boxes, c, off, [off[c]])[0]

    before = [round(score(c, offset), 3) for c in range(1, n)]
    for _ in range(2):
        for c in range(1, n):
            trials = sweep(logits, true_boxes, c, offset, OFFSETS)
            offset[c] = OFFSETS[int(np.argmax(trials))]
    after = [round(score(c, offset), 3) for c in range(1, n)]
    print("coarse box IoU per class before", before)
    print("coarse box IoU per class after ", after)
    print("offsets", offset.tolist())
    state[head] = state[head] + torch.tensor(offset, dtype=state[head].dtype)
    save_file(state, str(coarse / "final.safetensors"))
    (coarse / "calibration.json").write_text(json.dumps(
        {"head": head, "offsets": offset.tolist(), "box_iou_before": before, "box_iou_after": after}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
