"""``export``: a model bundle from a training folder, described by the recipe saved with the run.

The manifest comes from the run's own ``recipe.json`` and each network's ``network.json`` (never
from a recipe given at export time), through ``brainbarriers.bundles.build_manifest``; a network
whose saved recipe or spec disagrees with the run's recipe is refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
from pathlib import Path

from brainbarriers.bundles import build_manifest
from brainbarriers.bundles.manifest import ensemble_file
from brainbarriers.structures import FINE_TARGETS, fine_target

from .config import RECIPE_FILE, Recipe, as_recipe, read_recipe
from .engine import FINAL, SPEC, load_weights, network_spec


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


def run_recipe(workdir: Path) -> Recipe:
    """The recipe a training folder was trained with: ``workdir/recipe.json``, else the coarse
    network's (``recipe.json``, or ``config.json`` as runs before the typed recipe saved it)."""
    workdir = Path(workdir)
    if (workdir / RECIPE_FILE).is_file():
        return read_recipe(workdir)
    if (workdir / "one-stage" / RECIPE_FILE).is_file():  # a one-stage run (stages.ONE_STAGE)
        return read_recipe(workdir / "one-stage")
    legacy = workdir / "coarse" / "config.json"
    if not (workdir / "coarse" / RECIPE_FILE).is_file() and legacy.is_file():
        return as_recipe(json.loads(legacy.read_text()), str(legacy))
    return read_recipe(workdir / "coarse")


def _network_dirs(workdir: Path, targets: list[str]) -> dict[str, Path]:
    return {"coarse": workdir / "coarse", **{key: workdir / "fine" / key for key in targets}}


def _spec_problem(saved: dict, expected: dict) -> str | None:
    # the inter-slice axis depends on the prepared grid's direction, recorded only in network.json
    def comparable(spec: dict) -> dict:
        options = {k: v for k, v in spec.get("options", {}).items() if k != "inter_slice_axis"}
        return {**{k: spec.get(k) for k in ("architecture", "in_channels", "out_channels", "margin", "max_crop")},
                "options": options}

    a, b = comparable(saved), comparable(expected)
    for key in a:
        if a[key] != b[key]:
            return f"{key} {a[key]!r} (the recipe says {b[key]!r})"
    return None


def check_run(recipe: Recipe, workdir: Path, targets: list[str],
              members: dict[str, list[Path]] | None = None) -> dict[str, dict]:
    """The saved network specs of the run, checked against ``recipe``; raises ValueError on a mismatch.
    ``members``: more training folders of a fine target (an ensemble), checked the same way."""
    specs = {}
    folders = list(_network_dirs(Path(workdir), targets).items())
    folders += [(key, Path(folder)) for key, more in (members or {}).items() for folder in more]
    for name, folder in folders:
        spec = _check_network(recipe, name, folder)
        if name in specs and spec != specs[name]:  # an ensemble member: the same network, other weights
            raise ValueError(f"network {folder} is not the network of {workdir / 'fine' / name} (network.json differs)")
        specs.setdefault(name, spec)
    return specs


def _check_network(recipe: Recipe, name: str, folder: Path) -> dict:
    """The saved network spec in ``folder``, checked against ``recipe``."""
    spec = json.loads((folder / SPEC).read_text())
    problem = _spec_problem(spec, network_spec(recipe, None if name == "coarse" else fine_target(name)))
    if problem is None and (folder / RECIPE_FILE).is_file():
        saved = read_recipe(folder).data
        if name != "coarse":  # a fine network never sees the coarse grid
            saved = dataclasses.replace(saved, coarse_spacing=recipe.data.coarse_spacing)
        if saved != recipe.data:
            problem = "data settings (spacing, normalisation) differ"
    if problem:
        raise ValueError(f"network {folder} does not match the run's recipe: {problem}; "
                         f"retrain it or export its own run")
    return spec


def manifest_for_run(workdir: Path, targets: list[str], recipe: Recipe | None = None,
                     members: dict[str, list[Path]] | None = None) -> dict:
    """The bundle manifest of a training folder from its saved recipe and network specs (``members``:
    more training folders of a fine target, averaged with it at inference)."""
    workdir = Path(workdir)
    recipe = recipe or run_recipe(workdir)
    specs = check_run(recipe, workdir, targets, members)
    data = recipe.data
    return build_manifest(
        model_id=recipe.bundle.id, version=recipe.bundle.version, description=recipe.bundle.description,
        licence=recipe.bundle.licence, coarse=specs.pop("coarse"), fine=specs,
        spacing=data.spacing, coarse_spacing=data.coarse_spacing, normalisation=recipe.to_dict()["data"]["normalisation"],
        supported_subsets=recipe.supported_subsets(), test_time_flips=recipe.bundle.test_time_flips,
        ensembles={key: 1 + len(more) for key, more in (members or {}).items() if more},
        training={"data": recipe.bundle.data, "recipe": recipe.name, "code_version": _code_version(),
                  "date": datetime.date.today().isoformat()})


def one_stage_manifest(workdir: Path, recipe: Recipe) -> dict:
    """The manifest of a one-stage run (workdir/one-stage): its network as ``coarse`` at the model spacing."""
    from .stages import ONE_STAGE

    folder = Path(workdir) / ONE_STAGE
    spec = json.loads((folder / SPEC).read_text())
    problem = _spec_problem(spec, network_spec(recipe, None))
    if problem:
        raise ValueError(f"network {folder} does not match the run's recipe: {problem}; retrain it or export its own run")
    data = recipe.data
    return build_manifest(
        model_id=recipe.bundle.id, version=recipe.bundle.version, description=recipe.bundle.description,
        licence=recipe.bundle.licence, coarse=spec, fine={}, spacing=data.spacing, coarse_spacing=data.spacing,
        normalisation=recipe.to_dict()["data"]["normalisation"], supported_subsets=recipe.supported_subsets(),
        training={"data": recipe.bundle.data, "recipe": recipe.name, "code_version": _code_version(),
                  "date": datetime.date.today().isoformat()}, mode="one-stage")


def trained_targets(workdir: Path) -> list[str]:
    """Fine targets with final weights in ``workdir`` (structure-table order)."""
    return [t.key for t in FINE_TARGETS if (Path(workdir) / "fine" / t.key / FINAL).is_file()]


def _cached_arrays(cache: Path, cases: list[str] | None, key: str):
    """(array ``key``, model spacing) of each prepared case in ``cases`` (default: every one)."""
    import numpy as np

    from .prepare import load_index

    index = load_index(cache)
    for entry in index["cases"]:
        if cases and entry["case"] not in cases:
            continue
        with np.load(Path(cache) / entry["file"]) as z:
            yield z[key], tuple(index["spacing"])


def training_volume_stats(cache: Path, cases: list[str] | None = None) -> dict:
    """Manifest ``volume_stats``: per output label, the volumes of the prepared training labels
    (model spacing) of ``cases`` (default: every prepared case)."""
    from brainbarriers.quality import output_volumes, volume_statistics

    volumes: dict[str, list[float]] = {}
    for label, spacing in _cached_arrays(cache, cases, "label"):
        for key, ml in output_volumes(label, spacing).items():
            volumes.setdefault(key, []).append(ml)
    return volume_statistics(volumes)


def training_field_of_view(cache: Path, cases: list[str] | None = None) -> dict:
    """Manifest ``field_of_view``: how far the prepared training images of ``cases`` (default:
    every prepared case) reach below the top of the head (``quality.extent_below_head_top``)."""
    from brainbarriers.quality import extent_below_head_top, field_of_view_statistics

    return field_of_view_statistics([extent_below_head_top(image, spacing)
                                     for image, spacing in _cached_arrays(cache, cases, "image")])


def training_statistics(cache: Path, cases: list[str] | None = None) -> dict:
    """The manifest entries taken from the prepared training data: ``volume_stats`` and ``field_of_view``."""
    out = {"volume_stats": training_volume_stats(cache, cases)}
    fov = training_field_of_view(cache, cases)
    if fov:
        out["field_of_view"] = fov
    return out


def export_bundle(workdir: Path, out: Path, extra_files: dict[str, Path] | None = None,
                  cache: Path | None = None, cases: list[str] | None = None,
                  members: dict[str, list[Path]] | None = None) -> Path:
    """Write the bundle of ``workdir`` (coarse + every trained fine target) into ``out``; with the
    prepared training data (``cache``, ``cases``) the manifest also carries its volume statistics and
    how far its images reach below the top of the head. ``members``: fine target key -> more
    training folders of that target (other seeds), exported beside it as one ensemble."""
    from brainbarriers.bundles import write_bundle

    workdir = Path(workdir)
    recipe = run_recipe(workdir)
    if recipe.mode == "one-stage":
        from .stages import ONE_STAGE

        if not (workdir / ONE_STAGE / FINAL).is_file():
            raise FileNotFoundError(f"no trained one-stage network in {workdir / ONE_STAGE}")
        manifest = one_stage_manifest(workdir, recipe)
        if cache is not None:
            manifest.update(training_statistics(cache, cases))
        return write_bundle(out, manifest, {"coarse.safetensors": load_weights(workdir / ONE_STAGE / FINAL)}, extra_files)
    if not (workdir / "coarse" / FINAL).is_file():
        raise FileNotFoundError(f"no trained coarse network in {workdir / 'coarse'}")
    targets = trained_targets(workdir)
    if not targets:
        raise FileNotFoundError(f"no trained fine networks in {workdir / 'fine'}")
    members = {key: [Path(f) for f in more] for key, more in (members or {}).items() if more}
    stray = sorted(set(members) - set(targets))
    if stray:
        raise ValueError(f"ensemble members for {', '.join(stray)}, which {workdir / 'fine'} has not trained")
    for folder in [f for more in members.values() for f in more]:
        if not (folder / FINAL).is_file():
            raise FileNotFoundError(f"no trained network in {folder}")
    manifest = manifest_for_run(workdir, targets, members=members)
    if cache is not None:
        manifest.update(training_statistics(cache, cases))
    states = {"coarse.safetensors": load_weights(workdir / "coarse" / FINAL)}
    for key in targets:
        for number, folder in enumerate([workdir / "fine" / key, *members.get(key, [])], start=1):
            states[ensemble_file(key, number)] = load_weights(folder / FINAL)
    return write_bundle(out, manifest, states, extra_files)
