"""Where model bundles live: the shipped models folder and the user's cache.

The cache is ``platformdirs.user_cache_dir("brainbarriers")/models`` unless the environment
variable ``BRAINBARRIERS_CACHE`` names another folder (for locked-down or shared sites).
Each installed bundle is a folder ``<cache>/models/<id>-<version>/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CACHE_ENV = "BRAINBARRIERS_CACHE"
#: Bundles shipped inside the package (the demo model); they count as installed.
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "models"


def cache_dir() -> Path:
    """Root of the user's model cache (created on first use by the writers, not here)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("brainbarriers", appauthor=False))


def models_dir() -> Path:
    return cache_dir() / "models"


def _version_key(version: str) -> tuple:
    parts = []
    for p in version.replace("-", ".").replace("+", ".").split("."):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return tuple(parts)


def installed_bundles() -> list[tuple[str, str, Path]]:
    """(id, version, folder) of every bundle found in the shipped folder and the cache."""
    found = []
    for root in (SHIPPED_DIR, models_dir()):
        if not root.is_dir():
            continue
        for manifest in sorted(root.glob("*/manifest.json")):
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
                found.append((str(data["id"]), str(data["version"]), manifest.parent))
            except (OSError, ValueError, KeyError):
                continue
    return found


def find_installed(model_id: str, version: str | None = None) -> Path | None:
    """Folder of the installed bundle ``model_id`` (newest version unless ``version``)."""
    matches = [(v, p) for i, v, p in installed_bundles() if i == model_id and (version is None or v == version)]
    if not matches:
        return None
    return max(matches, key=lambda vp: _version_key(vp[0]))[1]
