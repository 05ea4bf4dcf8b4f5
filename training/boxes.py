"""Coarse-checkpoint boxes for the fine stage, found by the pipeline's own coarse code.

The paper trains each fine network on crops around boxes predicted by coarse checkpoints saved
during training (1/3, 2/3, end), so the fine network learns to tolerate imperfect localisation.
The boxes come from ``brainbarriers.pipeline.coarse_boxes`` (the same regions, fallback and
mapping ``brainbarriers segment`` uses) on the prepared coarse arrays, run by the pipeline's
``Runner``; they are stored without margin (the sampler adds it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from brainbarriers.bundles.bundle import DEFAULT_MAX_CROP
from brainbarriers.pipeline import coarse_boxes
from brainbarriers.predict import Runner
from brainbarriers.structures import FINE_TARGETS

from .engine import SPEC, build_network, load_weights
from .prepare import grid_from_record, load_case


def load_checkpoint_network(stage_dir: Path, weights: Path, runner: Runner) -> tuple[torch.nn.Module, dict]:
    """A stage's network with the weights of one checkpoint, ready for ``runner``."""
    spec = json.loads((Path(stage_dir) / SPEC).read_text())
    net = build_network(spec)
    net.load_state_dict(load_weights(weights))
    net.eval()
    return runner.prepare(net), spec


def predict_boxes(cache: Path, entries: list[dict], checkpoints: dict[str, Path], coarse_dir: Path,
                  device: torch.device | None = None) -> dict:
    """{checkpoint name: {case: {target: box | None}}} on the model grid (a box as [[k0, j0, i0], [k1, j1, i1]])."""
    runner = Runner(device or torch.device("cpu"))
    nets = {name: load_checkpoint_network(coarse_dir, weights, runner)[0] for name, weights in checkpoints.items()}
    no_margin = {t.key: 0 for t in FINE_TARGETS}
    result: dict = {name: {} for name in nets}
    for entry in entries:  # each cached case is read once, not once per checkpoint
        image, _ = load_case(cache, entry, coarse=True)
        grid, coarse_grid = grid_from_record(entry["grid"]), grid_from_record(entry["coarse_grid"])
        for name, net in nets.items():
            probs = runner.predict(net, image, tuple(DEFAULT_MAX_CROP))  # as an exported bundle's coarse stage
            boxes, _ = coarse_boxes(probs, coarse_grid, grid, list(FINE_TARGETS), no_margin)
            result[name][entry["case"]] = boxes
    return result
