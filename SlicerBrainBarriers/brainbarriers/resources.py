"""The resource guard: estimate a run's memory from the input headers and the model grid, before reading.

The estimate counts the arrays a run holds at its peak (see ``estimate_run_bytes``); it is a guard
against runs that cannot fit (a 0.2 mm whole-body CT, a header claiming huge dimensions), not a
measurement. ``BRAINBARRIERS_MEMORY_LIMIT_MB`` replaces the detected available memory (a shared
machine's budget, and the tests' way to play a small machine).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError

#: Environment variable: memory (MB) the run may use instead of what the system reports available.
LIMIT_ENV = "BRAINBARRIERS_MEMORY_LIMIT_MB"
#: Fixed working memory besides the arrays: the Python process, torch, network weights (bytes).
BASE_BYTES = 400 * 2**20
#: Bytes per voxel of a network crop while it runs (activations of the widest tiny-to-paper networks,
#: roughly 16 float32 feature maps alive at once).
CROP_BYTES_PER_VOXEL = 64


def _fmt(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def available_bytes() -> int | None:
    """Memory this process may still use: the override, else the smaller of the system's available
    memory and the cgroup (container) limit; None when it cannot be told."""
    override = os.environ.get(LIMIT_ENV)
    if override:
        try:
            return int(float(override) * 2**20)
        except ValueError:
            raise InputError(f"{LIMIT_ENV}={override!r} is not a number of megabytes") from None
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _grid_voxels(header, spacing) -> int:
    """Voxels of the identity-direction grid at ``spacing`` covering the image (as geometry.model_grid)."""
    d = np.array(header.direction, dtype=float).reshape(3, 3)
    extent = np.abs(d) @ (np.array(header.size, dtype=float) * np.array(header.spacing, dtype=float))
    return int(np.prod(np.maximum(1, np.ceil(extent / np.array(spacing, dtype=float)))))


def estimate_run_bytes(inputs: dict[str, str | Path], bundle) -> int:
    """Peak memory of segmenting ``inputs`` with ``bundle``, from headers only (bytes).

    Inputs: each image as read plus its float32 copy. Model grid (the reference's extent at the
    model spacing): the resampled inputs and the stacked channels (float32), labels (uint8) and
    best probability (float32). Reference grid: output labels and their probabilities (5 bytes a
    voxel). Networks: the largest crop's working memory, plus a fixed base.
    """
    from .io import image_header
    from .structures import MODALITIES

    headers = {m: image_header(p, m) for m, p in inputs.items()}
    used = [m for m in MODALITIES if m in headers and m in bundle.modalities] or list(headers)
    reference = headers[used[0]]
    total = BASE_BYTES
    for h in headers.values():
        total += h.nbytes + 4 * h.voxels
    model = _grid_voxels(reference, bundle.spacing)
    channels = len(bundle.modalities)
    total += model * (4 * channels * 2 + 1 + 4)
    total += reference.voxels * 5
    # a one-stage model has only its "coarse" network, whose softmax covers the whole model grid
    if bundle.manifest.get("mode") == "one-stage":
        total += model * 4 * int(bundle.network_spec("coarse")["out_channels"])
    crops = [bundle.network_spec(k).get("max_crop") for k in ["coarse", *bundle.manifest["networks"]["fine"]]]
    largest = max((int(np.prod(c)) for c in crops if c), default=0)
    total += min(largest, model) * CROP_BYTES_PER_VOXEL * max(1, channels)
    return int(total)


def check_memory(inputs: dict[str, str | Path], bundle) -> int:
    """Refuse a run that cannot fit in the available memory, with the estimate; returns the estimate."""
    need = estimate_run_bytes(inputs, bundle)
    have = available_bytes()
    if have is not None and need > have:
        raise InputError(
            f"this run needs about {_fmt(need)} of memory (inputs {', '.join(str(Path(p).name) for p in inputs.values())} "
            f"on the {bundle.spacing[0]:g} mm model grid) but {_fmt(max(have, 0))} is available; close other programs, "
            "crop the image or use a machine with more memory"
        )
    return need
