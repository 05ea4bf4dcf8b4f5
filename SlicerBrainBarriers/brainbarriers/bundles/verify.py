"""SHA-256 checks of bundle files (every file is checked before any weight is read)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import BundleError

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(directory: Path, name: str) -> dict:
    """The manifest 'files' entry of ``directory/name``: path, size, sha256."""
    path = directory / name
    return {"path": name, "size": path.stat().st_size, "sha256": sha256_file(path)}


def verify_files(directory: str | Path, files: list[dict], label: str = "") -> None:
    """Check that every listed file exists with its size and SHA-256; raise BundleError if not."""
    directory = Path(directory)
    label = label or str(directory)
    for entry in files:
        path = directory / entry["path"]
        if not path.is_file():
            raise BundleError(f"model {label}: file {entry['path']} is missing")
        if path.stat().st_size != entry["size"]:
            raise BundleError(
                f"model {label}: {entry['path']} has {path.stat().st_size} bytes, expected {entry['size']} "
                "(truncated or modified)"
            )
        if sha256_file(path) != entry["sha256"]:
            raise BundleError(f"model {label}: SHA-256 mismatch for {entry['path']} (corrupt or tampered)")
