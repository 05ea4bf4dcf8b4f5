"""``export``: a model bundle from a training folder, written through brainbarriers.bundles.write_bundle."""

from __future__ import annotations

import datetime
import itertools
import json
import subprocess
from pathlib import Path

from brainbarriers.structures import FINE_TARGETS, MODALITIES

from .engine import FINAL, SPEC, load_weights


def _code_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        if rev.returncode == 0:
            return rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    import brainbarriers

    return getattr(brainbarriers, "__version__", "unknown")


def build_manifest(config: dict, workdir: Path, targets: list[str]) -> dict:
    workdir = Path(workdir)
    coarse_spec = json.loads((workdir / "coarse" / SPEC).read_text())
    bundle = config.get("bundle", {})
    data = config["data"]
    dropout = config["train"].get("augmentation", {}).get("modality_dropout_probability", 0) > 0
    subsets = [list(MODALITIES)]
    if dropout:
        subsets = [list(c) for n in range(len(MODALITIES), 0, -1) for c in itertools.combinations(MODALITIES, n)]
    fine = {}
    for key in targets:
        spec = json.loads((workdir / "fine" / key / SPEC).read_text())
        fine[key] = {"architecture": spec["architecture"], "in_channels": spec["in_channels"], "out_channels": 2,
                     "options": spec["options"], "file": f"fine_{key}.safetensors", "slice_axis": spec["slice_axis"],
                     "margin": int(spec["margin"]), "max_crop": list(spec["max_crop"])}
    return {
        "schema_version": 1,
        "id": bundle.get("id", "brainbarriers-model"),
        "version": bundle.get("version", "0.1.0"),
        "description": bundle.get("description", ""),
        "licence": bundle.get("licence", "Apache-2.0"),
        "structures": targets,
        "inputs": {"modalities": list(MODALITIES), "supported_subsets": subsets},
        "spacing": list(data["spacing"]),
        "normalisation": {m: dict(data["normalisation"].get(m, {})) for m in MODALITIES},
        "networks": {
            "coarse": {"architecture": coarse_spec["architecture"], "in_channels": coarse_spec["in_channels"],
                       "out_channels": coarse_spec["out_channels"], "options": coarse_spec["options"],
                       "file": "coarse.safetensors", "spacing": list(data["coarse_spacing"])},
            "fine": fine,
        },
        "training": {"data": bundle.get("data", ""), "recipe": config.get("name", ""),
                     "code_version": _code_version(), "date": datetime.date.today().isoformat()},
        "timings": {"cpu_s": None, "gpu_s": None},
    }


def training_volume_stats(cache: Path, cases: list[str] | None = None) -> dict:
    """Manifest ``volume_stats``: per output label, the volumes of the prepared training labels
    (model spacing) of ``cases`` (default: every prepared case)."""
    import numpy as np
    from brainbarriers.quality import output_volumes, volume_statistics

    from .prepare import load_index

    index = load_index(cache)
    volumes: dict[str, list[float]] = {}
    for entry in index["cases"]:
        if cases and entry["case"] not in cases:
            continue
        with np.load(Path(cache) / entry["file"]) as z:
            for key, ml in output_volumes(z["label"], tuple(index["spacing"])).items():
                volumes.setdefault(key, []).append(ml)
    return volume_statistics(volumes)


def export_bundle(config: dict, workdir: Path, out: Path, extra_files: dict[str, Path] | None = None,
                  cache: Path | None = None, cases: list[str] | None = None) -> Path:
    """Write the bundle of ``workdir`` (coarse + every trained fine target) into ``out``; with the
    prepared training data (``cache``, ``cases``) the manifest also carries its volume statistics."""
    from brainbarriers.bundles import write_bundle

    workdir = Path(workdir)
    if not (workdir / "coarse" / FINAL).is_file():
        raise FileNotFoundError(f"no trained coarse network in {workdir / 'coarse'}")
    targets = [t.key for t in FINE_TARGETS if (workdir / "fine" / t.key / FINAL).is_file()]
    if not targets:
        raise FileNotFoundError(f"no trained fine networks in {workdir / 'fine'}")
    manifest = build_manifest(config, workdir, targets)
    if cache is not None:
        manifest["volume_stats"] = training_volume_stats(cache, cases)
    states = {"coarse.safetensors": load_weights(workdir / "coarse" / FINAL)}
    for key in targets:
        states[f"fine_{key}.safetensors"] = load_weights(workdir / "fine" / key / FINAL)
    return write_bundle(out, manifest, states, extra_files)
