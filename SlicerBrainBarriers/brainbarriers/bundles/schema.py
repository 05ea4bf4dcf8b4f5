"""Manifest validation: `jsonschema` against the published schema (manifest.schema.json), then the
cross-field rules a schema cannot express. The schema file is the single source of the format.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..errors import BundleError
from ..structures import COARSE_CHANNELS, FINE_TARGETS, MODALITIES

SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


@lru_cache(maxsize=1)
def manifest_schema() -> dict:
    """The published manifest schema (parsed JSON)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(manifest_schema())
    return Draft202012Validator(manifest_schema())


def schema_errors(manifest: object) -> list[str]:
    """Every violation of the published schema as 'manifest.path: problem' strings, in path order."""
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path])
    out = []
    for error in errors:
        where = "manifest" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
        out.append(f"{where}: {message}")
    return out


def _semantic_errors(manifest: dict) -> list[str]:
    """Cross-field rules the schema cannot express."""
    errors: list[str] = []
    modalities = manifest["inputs"]["modalities"]
    for subset in manifest["inputs"].get("supported_subsets", []):
        if not set(subset) <= set(modalities):
            errors.append(f"inputs.supported_subsets: {subset} uses a modality not in {modalities}")
    nets = manifest["networks"]
    files = {f["path"] for f in manifest["files"]}
    one_stage = manifest.get("mode") == "one-stage"
    if one_stage and nets["fine"]:
        errors.append("networks.fine: a one-stage model has no fine networks (its 'coarse' network segments all)")
    if one_stage and nets["coarse"].get("out_channels") != COARSE_CHANNELS:
        errors.append(f"networks.coarse.out_channels: a one-stage network has {COARSE_CHANNELS} (background + each structure)")
    for key in [] if one_stage else manifest["structures"]:
        if key not in nets["fine"]:
            errors.append(f"networks.fine: no network for structure '{key}'")
    for key in nets["fine"]:
        if key not in {t.key for t in FINE_TARGETS}:
            errors.append(f"networks.fine: unknown structure '{key}'")
    for name, spec in [("coarse", nets["coarse"]), *nets["fine"].items()]:
        if spec["in_channels"] != len(modalities):
            errors.append(f"networks.{name}: in_channels {spec['in_channels']} != {len(modalities)} modalities")
        others = spec.get("ensemble", [])
        for member in [spec["file"], *others]:
            if files and member not in files:
                errors.append(f"networks.{name}: file {member} is not listed in files")
        if spec["file"] in others:
            errors.append(f"networks.{name}: ensemble repeats its file {spec['file']}")
    if any(m not in MODALITIES for m in modalities):
        errors.append(f"inputs.modalities: known modalities are {list(MODALITIES)}")
    return errors


def validate_manifest(manifest: dict, source: str = "manifest") -> None:
    """Raise BundleError (one line) naming the first problems if ``manifest`` is invalid."""
    errors = schema_errors(manifest)
    if not errors:
        errors = _semantic_errors(manifest)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise BundleError(f"invalid model manifest {source}: " + "; ".join(errors[:3]) + more)
