"""Downloading and importing bundle zips: resumable, size- and SHA-256-checked, renamed atomically.

A download goes to ``<name>.part`` (resumed with an HTTP Range request when it exists), is
checked against the expected size and SHA-256, and only then renamed. A zip (downloaded or
imported offline) is unpacked into a temporary folder in the cache, its manifest validated and
every file verified, then the folder is renamed to ``<cache>/models/<id>-<version>``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from ..errors import BundleError, DownloadError
from .bundle import MANIFEST, load_bundle, read_manifest
from .cache import models_dir
from .schema import validate_manifest
from .verify import sha256_file, verify_files

_CHUNK = 1 << 16


def download_file(
    url: str,
    dest: str | Path,
    sha256: str | None,
    size: int | None = None,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` with resume; verify size and SHA-256.

    A truncated transfer keeps the .part file (the next call resumes it) and raises DownloadError;
    a SHA-256 mismatch deletes it and raises DownloadError.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is None or have < size:
        request = urllib.request.Request(url, headers={"User-Agent": "brainbarriers"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                status = getattr(resp, "status", 200)
                if have and status != 206:  # server ignored the range: start again
                    have = 0
                length = resp.headers.get("Content-Length")
                expected = have + int(length) if length is not None else size
                with open(part, "ab" if have else "wb") as f:
                    got = have
                    while True:
                        try:
                            chunk = resp.read(_CHUNK)
                        except (OSError, ValueError) as exc:  # IncompleteRead, reset connection
                            raise DownloadError(
                                f"download of {url} was interrupted after {got} bytes ({type(exc).__name__}); "
                                "run the command again to resume"
                            ) from None
                        if not chunk:
                            break
                        f.write(chunk)
                        got += len(chunk)
                        if progress:
                            progress(got, expected)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and size is not None and have >= size:
                pass  # already complete
            else:
                raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise DownloadError(f"download of {url} failed: {exc.reason}") from None
        except TimeoutError:
            raise DownloadError(f"download of {url} timed out; run the command again to resume") from None
        got = part.stat().st_size
        expected_total = size if size is not None else expected
        if expected_total is not None and got < expected_total:
            raise DownloadError(
                f"download of {url} is truncated ({got} of {expected_total} bytes); run the command again to resume"
            )
    if size is not None and part.stat().st_size != size:
        part.unlink()
        raise DownloadError(f"download of {url} has {part.stat().st_size if part.exists() else 0} bytes, expected {size}")
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256.lower():
            part.unlink()
            raise DownloadError(f"download of {url} does not match its SHA-256 (got {actual[:12]}..., expected {sha256[:12]}...); deleted")
    os.replace(part, dest)
    return dest


def _safe_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = []
    for info in zf.infolist():
        p = Path(info.filename)
        if p.is_absolute() or ".." in p.parts:
            raise BundleError(f"zip entry {info.filename!r} points outside the bundle; refused")
        members.append(info)
    return members


def import_bundle(source: str | Path, sha256: str | None = None, replace: bool = False) -> Path:
    """Install a bundle from a zip or a folder into the cache after verifying it; returns its folder.

    Args:
        source: a bundle zip (manifest.json at its top or inside one folder) or a bundle folder.
        sha256: expected SHA-256 of the zip (checked first when given).
        replace: replace an installed bundle of the same id and version.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise BundleError(f"{source}: file not found")
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    try:
        if source.is_dir():
            folder = source
        else:
            if sha256 is not None and sha256_file(source) != sha256.lower():
                raise DownloadError(f"{source} does not match the expected SHA-256; refused")
            try:
                with zipfile.ZipFile(source) as zf:
                    zf.extractall(work, members=_safe_members(zf))
            except zipfile.BadZipFile:
                raise BundleError(f"{source} is not a valid zip file (truncated or corrupt)") from None
            manifests = sorted(work.rglob(MANIFEST), key=lambda p: len(p.parts))
            if not manifests:
                raise BundleError(f"{source} holds no {MANIFEST}")
            folder = manifests[0].parent
        manifest = read_manifest(folder)
        validate_manifest(manifest, f"in {source}")
        verify_files(folder, manifest["files"], f"{manifest['id']}@{manifest['version']} from {source.name}")
        target = root / f"{manifest['id']}-{manifest['version']}"
        if target.exists():
            if not replace:
                load_bundle(target)  # already installed: still verify what is there
                return target
            shutil.rmtree(target)
        staged = work / ".staged"
        staged.mkdir()
        for entry in manifest["files"] + [{"path": MANIFEST}]:
            shutil.copy2(folder / entry["path"], staged / entry["path"])
        os.replace(staged, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def download_bundle(entry: dict, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download a models-index entry's zip into the cache, verify it, and install it."""
    if entry.get("shipped"):
        raise BundleError(f"model {entry['id']} ships inside the package (brainbarriers/models/) and is missing from "
                          "this installation; reinstall the package")
    if not entry.get("url"):
        raise BundleError(f"model {entry['id']} has no download address in the models index")
    downloads = models_dir().parent / "downloads"
    zip_path = downloads / f"{entry['id']}-{entry['version']}.zip"
    download_file(entry["url"], zip_path, entry.get("sha256"), entry.get("size"), progress=progress)
    try:
        return import_bundle(zip_path)  # download_file has checked the zip's size and SHA-256
    finally:
        zip_path.unlink(missing_ok=True)
