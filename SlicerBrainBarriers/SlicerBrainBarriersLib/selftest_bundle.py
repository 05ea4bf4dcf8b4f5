"""A tiny random-weight model bundle for the module's self-test (seconds on a CPU).

Run in a child process (it imports torch): ``python -m SlicerBrainBarriersLib.selftest_bundle
FOLDER``; prints a ``done`` JSON line with the bundle folder. The weights are random, so the
self-test checks the plumbing (files out, pipeline, segments back with names, colours and codes),
not accuracy; the demo model's accuracy is checked by the slow tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from brainbarriers.structures import COARSE_CHANNELS, FINE_TARGETS, MODALITIES

COARSE = {"levels": 3, "base_width": 4, "max_width": 8}
FINE = {"hr_width": 2, "mr_widths": [4, 4, 8, 8]}


def manifest() -> dict:
    fine = {}
    for t in FINE_TARGETS:
        options = dict(FINE)
        if t.variant == "s":
            options["inter_slice_axis"] = 2 if t.slice_axis == "LR" else 0
        fine[t.key] = {"architecture": f"hmrnet-{t.variant}", "in_channels": len(MODALITIES), "out_channels": 2,
                       "options": options, "file": f"fine_{t.key}.safetensors", "slice_axis": t.slice_axis,
                       "margin": t.margin, "max_crop": [32, 32, 32]}
    return {
        "schema_version": 1, "id": "brainbarriers-selftest", "version": "0.0.1",
        "description": "random weights for the module self-test", "licence": "Apache-2.0",
        "structures": [t.key for t in FINE_TARGETS],
        "inputs": {"modalities": list(MODALITIES), "supported_subsets": [list(MODALITIES)]},
        "spacing": [6.0, 6.0, 6.0],
        "normalisation": {m: ({"clip": [-100, 200]} if m == "ct" else {}) for m in MODALITIES},
        "networks": {
            "coarse": {"architecture": "coarse-unet", "in_channels": len(MODALITIES), "out_channels": COARSE_CHANNELS,
                       "options": dict(COARSE), "file": "coarse.safetensors", "spacing": [12.0, 12.0, 12.0]},
            "fine": fine,
        },
        "training": {"data": "none (random weights)", "recipe": "self-test", "code_version": "selftest", "date": "2026-01-01"},
        "timings": {"cpu_s": None, "gpu_s": None},
    }


def write(folder: Path, seed: int = 0) -> Path:
    import torch
    from brainbarriers.bundles import write_bundle
    from brainbarriers.networks import build

    torch.manual_seed(seed)
    m = manifest()
    nets = m["networks"]
    states = {nets["coarse"]["file"]: build("coarse-unet", nets["coarse"]["in_channels"], nets["coarse"]["out_channels"],
                                            **nets["coarse"]["options"]).state_dict()}
    for spec in nets["fine"].values():
        states[spec["file"]] = build(spec["architecture"], spec["in_channels"], 2, **spec["options"]).state_dict()
    return write_bundle(folder, m, states)


if __name__ == "__main__":
    out = write(Path(sys.argv[1]))
    print(json.dumps({"stage": "done", "outputs": {"folder": str(out)}}), flush=True)
