"""The one place a bundle manifest is put together (export, benchmarks and test fixtures call it).

``coarse_network`` and ``fine_network`` describe one network as training records it (its
``network.json``) and as the manifest lists it; ``build_manifest`` assembles the manifest (without
``files``, which ``write_bundle`` fills in) and validates it against the published schema.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Optional, Union

from ..preprocessing import array_axis
from ..structures import COARSE_CHANNELS, FINE_TARGETS, MODALITIES, FineTarget, fine_target
from .schema import validate_manifest

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
#: Networks with an ``inter_slice_axis`` option (named here, torch-free; a test checks it against
#: brainbarriers.networks.build): thin targets pass it their slice direction.
SLICE_AXIS_NETWORKS = ("hmrnet-s", "sepnet3d")
_NETWORK_KEYS = ("architecture", "in_channels", "out_channels", "options")


def coarse_network(options: Optional[dict] = None, architecture: str = "coarse-unet",
                   in_channels: int = len(MODALITIES)) -> dict:
    """Spec of the coarse network: architecture, channels and constructor options."""
    return {"architecture": architecture, "in_channels": in_channels, "out_channels": COARSE_CHANNELS,
            "options": dict(options or {})}


def fine_network(target: Union[FineTarget, str], options: Optional[dict] = None, architecture: Optional[str] = None,
                 margin: Optional[int] = None, max_crop: Sequence[int] = (128, 128, 128),
                 in_channels: int = len(MODALITIES), direction: Sequence[float] = IDENTITY,
                 slice_axis: Optional[str] = None, window: Optional[Sequence[int]] = None) -> dict:
    """Spec of one fine network. For HMRNet-s (and 3D SepNet) the inter-slice axis is the array axis of the target's
    slice direction (the table's, or ``slice_axis``) on a grid with ``direction`` (the model grid
    has the identity direction); the margin defaults to the structure table's. ``window``: the fixed
    training window (patch size), when the network was trained on fixed windows."""
    t = fine_target(target) if isinstance(target, str) else target
    options = dict(options or {})
    axis = slice_axis or t.slice_axis
    architecture = architecture or f"hmrnet-{t.variant}"
    if t.variant == "s" and axis is not None and architecture in SLICE_AXIS_NETWORKS:
        options["inter_slice_axis"] = array_axis(tuple(direction), axis)
    return {"architecture": architecture, "in_channels": in_channels, "out_channels": 2,
            "options": options, "target": t.key, "slice_axis": axis,
            "margin": t.margin if margin is None else int(margin), "max_crop": [int(n) for n in max_crop],
            **({"window": [int(n) for n in window]} if window else {})}


def ensemble_file(key: str, member: int) -> str:
    """The weight file of a fine target's ``member``-th network (1: the network's own ``file``)."""
    return f"fine_{key}.safetensors" if member == 1 else f"fine_{key}_{member}.safetensors"


def build_manifest(
    *,
    model_id: str,
    version: str,
    coarse: dict,
    fine: dict[str, dict],
    spacing: Sequence[float],
    coarse_spacing: Sequence[float],
    normalisation: dict[str, dict],
    licence: str = "Apache-2.0",
    description: str = "",
    modalities: Sequence[str] = MODALITIES,
    supported_subsets: Optional[Sequence[Sequence[str]]] = None,
    training: Optional[dict] = None,
    timings: Optional[dict] = None,
    mode: str = "two-stage",
    test_time_flips: Optional[Mapping[str, Sequence[str]]] = None,
    ensembles: Optional[Mapping[str, int]] = None,
) -> dict:
    """A validated manifest (without ``files``) for a coarse network and fine networks by target key.

    ``coarse`` and ``fine`` values are network specs (``coarse_network``/``fine_network``, or a
    training run's ``network.json``); weights go to ``coarse.safetensors`` and
    ``fine_<key>.safetensors``. Structures are listed in the structure table's order.

    ``mode="one-stage"``: ``coarse`` is the single network whose argmax on the model grid is the
    segmentation (``fine`` empty, ``coarse_spacing`` the model spacing); ``structures`` then come
    from ``fine``'s keys or, when it is empty, every fine target.

    ``test_time_flips``: fine-target key -> axes (``"LR"``) whose flips that network's output is
    averaged over at inference, whatever the quality option. ``ensembles``: fine-target key -> how
    many networks that target has (at least 2): the others' weights go to
    ``fine_<key>_2.safetensors``, ``fine_<key>_3.safetensors``, ... and inference averages them all.
    """
    order = [t.key for t in FINE_TARGETS]
    unknown = sorted(set(fine) - set(order))
    if unknown:
        raise ValueError(f"unknown fine targets {unknown}")
    structures = [k for k in order if k in fine or (mode == "one-stage" and not fine)]
    flips = dict(test_time_flips or {})
    members = dict(ensembles or {})
    if any(int(n) < 2 for n in members.values()):
        raise ValueError(f"an ensemble has at least two networks: {members}")
    unknown = sorted((set(flips) | set(members)) - set(fine))
    if unknown:
        raise ValueError(f"test-time flips or ensembles for fine targets without a network: {unknown}")
    fine_entries = {}
    for key in [k for k in structures if k in fine]:
        spec = fine[key]
        fine_entries[key] = {**{k: spec[k] for k in _NETWORK_KEYS}, "options": dict(spec.get("options", {})),
                             "file": ensemble_file(key, 1), "slice_axis": spec.get("slice_axis"),
                             "margin": int(spec["margin"]), "max_crop": [int(n) for n in spec["max_crop"]],
                             **({"window": [int(n) for n in spec["window"]]} if spec.get("window") else {}),
                             **({"test_time_flips": list(flips[key])} if flips.get(key) else {}),
                             **({"ensemble": [ensemble_file(key, i) for i in range(2, int(members[key]) + 1)]}
                                if members.get(key) else {})}
    coarse_entry = {**{k: coarse[k] for k in _NETWORK_KEYS}, "options": dict(coarse.get("options", {})),
                    "file": "coarse.safetensors", "spacing": [float(s) for s in coarse_spacing]}
    manifest = {
        "schema_version": 1,
        **({"mode": mode} if mode != "two-stage" else {}),
        "id": model_id,
        "version": version,
        "description": description,
        "licence": licence,
        "structures": structures,
        "inputs": {"modalities": list(modalities),
                   "supported_subsets": [list(s) for s in (supported_subsets or [modalities])]},
        "spacing": [float(s) for s in spacing],
        "normalisation": {m: dict(normalisation.get(m, {})) for m in modalities},
        "networks": {"coarse": coarse_entry, "fine": fine_entries},
        "training": dict(training or {"date": datetime.date.today().isoformat()}),
        "timings": dict(timings or {"cpu_s": None, "gpu_s": None}),
    }
    validate_manifest({**manifest, "files": []}, f"built for {model_id}")
    return manifest
