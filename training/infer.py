"""Prediction on prepared cases with trained stage folders: coarse boxes, fine segmentation.

Used by training itself (coarse-checkpoint boxes for the fine stage), by ``evaluate`` and by
``cross-validate``. The Slicer module and ``brainbarriers segment`` use the pipeline of the core
package on bundles instead; this works directly on the cache (already resampled and normalised).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from brainbarriers.networks.inference import inference_context, prepare_for_inference
from brainbarriers.networks.padding import predict_padded
from brainbarriers.structures import FINE_TARGETS, FineTarget
from scipy import ndimage

from .data import box_slices, expand_box, limit_box, scale_box
from .engine import FINAL, SPEC, build_network, load_weights
from .prepare import bounding_box, load_case


def load_stage_network(stage_dir: Path, weights: Path | None = None, device=None) -> tuple[torch.nn.Module, dict]:
    spec = json.loads((Path(stage_dir) / SPEC).read_text())
    net = build_network(spec)
    net.load_state_dict(load_weights(weights or Path(stage_dir) / FINAL))
    net.eval()
    net = prepare_for_inference(net)
    if device is not None:
        net.to(device)
    return net, spec


def _predict(net: torch.nn.Module, image: np.ndarray, device) -> np.ndarray:
    with inference_context(device):
        x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
        return predict_padded(net, x)[0].argmax(0).cpu().numpy().astype(np.uint8)


def main_components(mask: np.ndarray, keep_fraction: float = 0.1) -> np.ndarray:
    """Connected components holding at least ``keep_fraction`` of the largest one's voxels
    (drops stray voxels that would inflate a box, keeps a structure broken in pieces)."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.nonzero(sizes >= keep_fraction * sizes.max())[0] + 1
    return np.isin(lab, keep)


def coarse_boxes(coarse_label: np.ndarray, fine_shape, ratio: float) -> dict[str, list[int] | None]:
    """Per target, the box of the coarse prediction mapped to the model grid (None when absent)."""
    out = {}
    for t in FINE_TARGETS:
        box = bounding_box(main_components(coarse_label == t.coarse_index))
        out[t.key] = scale_box(box, ratio, tuple(fine_shape)) if box else None
    return out


def predict_boxes(cache: Path, index: dict, entries: list[dict], checkpoints: dict[str, Path], coarse_dir: Path,
                  device=None) -> dict:
    """{checkpoint name: {case: {target: box|None}}} from each coarse checkpoint's prediction."""
    device = device or torch.device("cpu")
    ratio = float(index["coarse_spacing"][0]) / float(index["spacing"][0])
    nets = {name: load_stage_network(coarse_dir, weights, device)[0] for name, weights in checkpoints.items()}
    result: dict = {name: {} for name in nets}
    for entry in entries:  # each cached case is read once, not once per checkpoint
        image, _ = load_case(cache, entry, coarse=True)
        for name, net in nets.items():
            result[name][entry["case"]] = coarse_boxes(_predict(net, image, device), entry["shape"], ratio)
    return result


def segment_case(cache: Path, index: dict, entry: dict, coarse: torch.nn.Module | None,
                 fine: dict[str, tuple[torch.nn.Module, dict]], device=None, gt_boxes: bool = False) -> np.ndarray:
    """Fine-target index map (model grid) of one cached case: coarse boxes, then each fine network
    in its box + margin; later targets overwrite earlier ones where they overlap (table order)."""
    device = device or torch.device("cpu")
    image, _ = load_case(cache, entry)
    if gt_boxes or coarse is None:
        boxes = entry["boxes"]
    else:
        cimage, _ = load_case(cache, entry, coarse=True)
        ratio = float(index["coarse_spacing"][0]) / float(index["spacing"][0])
        boxes = coarse_boxes(_predict(coarse, cimage, device), entry["shape"], ratio)
    out = np.zeros(image.shape[1:], dtype=np.uint8)
    for t in FINE_TARGETS:
        if t.key not in fine or not boxes.get(t.key):
            continue
        net, spec = fine[t.key]
        box = expand_box(list(boxes[t.key]), int(spec.get("margin", t.margin)), out.shape)
        box = limit_box(box, spec.get("max_crop"), None)
        sl = box_slices(box)
        pred = _predict(net, image[(slice(None), *sl)], device)
        region = out[sl]
        region[pred == 1] = t.coarse_index
    return out


def load_trained(workdir: Path, targets: tuple[FineTarget, ...] = FINE_TARGETS, device=None):
    """(coarse network or None, {target: (network, spec)}) from a training folder."""
    workdir = Path(workdir)
    coarse = None
    if (workdir / "coarse" / FINAL).is_file():
        coarse, _ = load_stage_network(workdir / "coarse", device=device)
    fine = {}
    for t in targets:
        d = workdir / "fine" / t.key
        if (d / FINAL).is_file():
            fine[t.key] = load_stage_network(d, device=device)
    return coarse, fine


def to_output_labels(fine_map: np.ndarray) -> np.ndarray:
    """Fine-target indices -> ABCs output labels (both sinus parts -> 3)."""
    lut = np.zeros(256, dtype=np.uint8)
    for t in FINE_TARGETS:
        lut[t.coarse_index] = t.label
    return lut[fine_map]
