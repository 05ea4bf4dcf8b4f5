"""The models index: a JSON list of published bundles (id, version, zip url, sha256, size, inputs, times).

The index shipped in the package (models_index.json) is used unless BRAINBARRIERS_MODELS_INDEX
names another file (sites can publish their own). Bundles shipped in the package count as
installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import BundleError
from .cache import _version_key, find_installed, installed_bundles

INDEX_ENV = "BRAINBARRIERS_MODELS_INDEX"
SHIPPED_INDEX = Path(__file__).with_name("models_index.json")


def load_index(path: str | Path | None = None) -> list[dict]:
    """Entries of the models index."""
    path = Path(path or os.environ.get(INDEX_ENV) or SHIPPED_INDEX)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read the models index {path} ({exc})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) and "id" in m and "version" in m for m in models):
        raise BundleError(f"models index {path} has no valid 'models' list")
    return models


def find_entry(name: str, index: list[dict] | None = None) -> dict:
    """Index entry for ``id`` or ``id@version`` (newest version when not given)."""
    index = index or load_index()
    model_id, _, version = name.partition("@")
    entries = [e for e in index if e["id"] == model_id and (not version or e["version"] == version)]
    if not entries:
        known = sorted({e["id"] for e in index})
        raise BundleError(f"model '{name}' is not in the models index; known: {', '.join(known)}")
    return max(entries, key=lambda e: _version_key(e["version"]))


def list_models(index: list[dict] | None = None) -> list[dict]:
    """Index entries plus installed bundles not in the index, each with "installed" (folder or None)
    and "licence" (the installed manifest's, else the index entry's, else None)."""
    rows = []
    seen = set()
    for e in index or load_index():
        folder = find_installed(e["id"], e["version"])
        rows.append({**e, "installed": str(folder) if folder else None,
                     "licence": _manifest_licence(folder) or e.get("licence")})
        seen.add((e["id"], e["version"]))
    for model_id, version, folder in installed_bundles():
        if (model_id, version) not in seen:
            rows.append({"id": model_id, "version": version, "installed": str(folder), "url": None,
                         "licence": _manifest_licence(folder)})
            seen.add((model_id, version))
    return rows


def _manifest_licence(folder: Path | None) -> str | None:
    if folder is None:
        return None
    try:
        licence = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8")).get("licence")
    except (OSError, ValueError, AttributeError):
        return None
    return str(licence) if licence else None
