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


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the bounding boxes of two masks (0 when either is empty): what the pipeline uses."""
    if not a.any() or not b.any():
        return 0.0
    ia, ib = np.argwhere(a), np.argwhere(b)
    lo_a, hi_a, lo_b, hi_b = ia.min(0), ia.max(0) + 1, ib.min(0), ib.max(0) + 1
    inter = np.prod(np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None))
    union = np.prod(hi_a - lo_a) + np.prod(hi_b - lo_b) - inter
    return float(inter / union)


def main(workdir: str, cache: str) -> int:
    torch.set_num_threads(1)
    coarse = Path(workdir) / "coarse"
    spec = json.loads((coarse / "network.json").read_text())
    original = coarse / "final_uncalibrated.safetensors"
    if not original.exists():
        shutil.copy(coarse / "final.safetensors", original)
    state = load_file(str(original))
    net = build(spec["architecture"], spec["in_channels"], spec["out_channels"], **spec["options"])
    net.load_state_dict(state)
    net.eval()
    head = f"heads.{len(net.heads) - 1}.bias"
    logits, labels = [], []
    for f in sorted(Path(cache).glob("*.npz")):
        d = np.load(f)
        x = torch.from_numpy(d["coarse_image"])[None]
        for drop in SUBSETS.values():
            xx = x.clone()
            xx[:, drop] = 0
            with torch.inference_mode():
                logits.append(predict_padded(net, xx)[0].numpy())
            labels.append(d["coarse_label"])
    n = logits[0].shape[0]
    offset = np.zeros(n)

    def score(c: int, off: np.ndarray) -> float:
        return float(np.mean([box_iou((lg + off[:, None, None, None]).argmax(0) == c, lab == c)
                              for lg, lab in zip(logits, labels)]))

    before = [round(score(c, offset), 3) for c in range(1, n)]
    for _ in range(2):
        for c in range(1, n):
            trials = []
            for o in OFFSETS:
                off = offset.copy()
                off[c] = o
                trials.append(score(c, off))
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
