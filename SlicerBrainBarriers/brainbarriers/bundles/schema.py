"""Manifest validation against the published JSON schema (manifest.schema.json).

The `jsonschema` package is not a runtime dependency (the module installs into Slicer's Python),
so this validates the subset of JSON Schema the manifest schema uses: type, enum, required,
properties, additionalProperties, items, min/maxItems, uniqueItems, minimum, maximum,
exclusiveMinimum, pattern, minLength and local $ref. The schema file stays the single source.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..structures import FINE_TARGETS, MODALITIES

SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


@lru_cache(maxsize=1)
def manifest_schema() -> dict:
    """The published manifest schema (parsed JSON)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def schema_errors(value: Any, schema: dict, root: dict | None = None, where: str = "manifest") -> list[str]:
    """Every violation of ``schema`` by ``value`` as 'path: problem' strings."""
    root = root if root is not None else schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    errors: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [f"{where}: expected {' or '.join(types)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing '{key}'")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                errors += schema_errors(item, props[key], root, f"{where}.{key}")
            elif extra is False:
                errors.append(f"{where}: unexpected key '{key}'")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, root, f"{where}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: at most {schema['maxItems']} items")
        if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
            errors.append(f"{where}: items must be unique")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += schema_errors(item, schema["items"], root, f"{where}[{i}]")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} > {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{where}: {value} must be > {schema['exclusiveMinimum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: too short")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    return errors


def _semantic_errors(manifest: dict) -> list[str]:
    """Cross-field rules the schema cannot express."""
    errors: list[str] = []
    modalities = manifest["inputs"]["modalities"]
    for subset in manifest["inputs"].get("supported_subsets", []):
        if not set(subset) <= set(modalities):
            errors.append(f"inputs.supported_subsets: {subset} uses a modality not in {modalities}")
    nets = manifest["networks"]
    files = {f["path"] for f in manifest["files"]}
    for key in manifest["structures"]:
        if key not in nets["fine"]:
            errors.append(f"networks.fine: no network for structure '{key}'")
    for key in nets["fine"]:
        if key not in {t.key for t in FINE_TARGETS}:
            errors.append(f"networks.fine: unknown structure '{key}'")
    for name, spec in [("coarse", nets["coarse"]), *nets["fine"].items()]:
        if spec["in_channels"] != len(modalities):
            errors.append(f"networks.{name}: in_channels {spec['in_channels']} != {len(modalities)} modalities")
        if files and spec["file"] not in files:
            errors.append(f"networks.{name}: file {spec['file']} is not listed in files")
    if any(m not in MODALITIES for m in modalities):
        errors.append(f"inputs.modalities: known modalities are {list(MODALITIES)}")
    return errors


def validate_manifest(manifest: dict, source: str = "manifest") -> None:
    """Raise BundleError (one line) naming the first problems if ``manifest`` is invalid."""
    errors = schema_errors(manifest, manifest_schema())
    if not errors:
        errors = _semantic_errors(manifest)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise BundleError(f"invalid model manifest {source}: " + "; ".join(errors[:3]) + more)
