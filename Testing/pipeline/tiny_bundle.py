"""A tiny random-weight bundle written through write_bundle (shared by the pipeline tests)."""

from __future__ import annotations

from pathlib import Path

import torch
from brainbarriers.bundles import write_bundle
from brainbarriers.networks import build
from brainbarriers.structures import COARSE_CHANNELS, FINE_TARGETS

TINY_COARSE = {"levels": 3, "base_width": 4, "max_width": 8}
TINY_FINE = {"hr_width": 2, "mr_widths": [4, 4, 8, 8]}


def tiny_manifest(model_id: str = "tiny-test", modalities=("ct", "t1", "t2"), subsets=None,
                  structures=None, spacing=(1.2, 1.2, 1.2), coarse_spacing=(2.4, 2.4, 2.4),
                  max_crop=(128, 128, 128)) -> dict:
    structures = list(structures or [t.key for t in FINE_TARGETS])
    fine = {}
    for t in FINE_TARGETS:
        if t.key not in structures:
            continue
        options = dict(TINY_FINE)
        if t.variant == "s":
            options["inter_slice_axis"] = 2 if t.slice_axis == "LR" else 0
        fine[t.key] = {
            "architecture": f"hmrnet-{t.variant}", "in_channels": len(modalities), "out_channels": 2,
            "options": options, "file": f"fine_{t.key}.safetensors", "slice_axis": t.slice_axis,
            "margin": t.margin, "max_crop": list(max_crop),
        }
    return {
        "schema_version": 1, "id": model_id, "version": "0.0.1", "description": "tiny random test model",
        "licence": "Apache-2.0", "structures": structures,
        "inputs": {"modalities": list(modalities), "supported_subsets": [list(s) for s in (subsets or [modalities])]},
        "spacing": list(spacing),
        "normalisation": {m: ({"clip": [-100, 200]} if m == "ct" else {}) for m in modalities},
        "networks": {
            "coarse": {"architecture": "coarse-unet", "in_channels": len(modalities), "out_channels": COARSE_CHANNELS,
                       "options": dict(TINY_COARSE), "file": "coarse.safetensors", "spacing": list(coarse_spacing)},
            "fine": fine,
        },
        "training": {"data": "none (random weights)", "recipe": "test fixture", "code_version": "test", "date": "2026-01-01"},
        "timings": {"cpu_s": None, "gpu_s": None},
    }


def write_tiny_bundle(directory: Path, seed: int = 0, **kwargs) -> Path:
    """Write a tiny random-weight bundle and return its folder."""
    torch.manual_seed(seed)
    manifest = tiny_manifest(**kwargs)
    nets = manifest["networks"]
    states = {nets["coarse"]["file"]: build("coarse-unet", nets["coarse"]["in_channels"], nets["coarse"]["out_channels"],
                                            **nets["coarse"]["options"]).state_dict()}
    for spec in nets["fine"].values():
        states[spec["file"]] = build(spec["architecture"], spec["in_channels"], 2, **spec["options"]).state_dict()
    return write_bundle(directory, manifest, states)
