"""A tiny random-weight bundle written through write_bundle (shared by the pipeline tests)."""

from __future__ import annotations

from pathlib import Path

import torch
from brainbarriers.bundles import build_manifest, coarse_network, fine_network, write_bundle
from brainbarriers.networks import build
from brainbarriers.structures import FINE_TARGETS

TINY_COARSE = {"levels": 3, "base_width": 4, "max_width": 8}
TINY_FINE = {"hr_width": 2, "mr_widths": [4, 4, 8, 8]}


def tiny_manifest(model_id: str = "tiny-test", modalities=("ct", "t1", "t2"), subsets=None,
                  structures=None, spacing=(1.2, 1.2, 1.2), coarse_spacing=(2.4, 2.4, 2.4),
                  max_crop=(128, 128, 128), test_time_flips=None, ensembles=None) -> dict:
    structures = list(structures or [t.key for t in FINE_TARGETS])
    channels = len(modalities)
    return build_manifest(
        model_id=model_id, version="0.0.1", description="tiny random test model", licence="Apache-2.0",
        coarse=coarse_network(TINY_COARSE, in_channels=channels),
        fine={key: fine_network(key, TINY_FINE, max_crop=max_crop, in_channels=channels) for key in structures},
        spacing=spacing, coarse_spacing=coarse_spacing,
        normalisation={m: ({"clip": [-100, 200]} if m == "ct" else {}) for m in modalities},
        modalities=modalities, supported_subsets=subsets or [modalities], test_time_flips=test_time_flips,
        ensembles=ensembles,
        training={"data": "none (random weights)", "recipe": "test fixture", "code_version": "test",
                  "date": "2026-01-01"})


def write_tiny_bundle(directory: Path, seed: int = 0, **kwargs) -> Path:
    """Write a tiny random-weight bundle and return its folder."""
    torch.manual_seed(seed)
    manifest = tiny_manifest(**kwargs)
    nets = manifest["networks"]
    states = {nets["coarse"]["file"]: build("coarse-unet", nets["coarse"]["in_channels"], nets["coarse"]["out_channels"],
                                            **nets["coarse"]["options"]).state_dict()}
    for spec in nets["fine"].values():
        for name in [spec["file"], *spec.get("ensemble", [])]:  # each member its own random weights
            states[name] = build(spec["architecture"], spec["in_channels"], 2, **spec["options"]).state_dict()
    return write_bundle(directory, manifest, states)
