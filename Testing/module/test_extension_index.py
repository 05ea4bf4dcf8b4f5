"""The Slicer Extensions Index entry (docs/extensions-index/BrainBarriers.json) against what the
index checks on a submission (Slicer/ExtensionsIndex: the catalog-entry JSON schema v1.0.2,
scripts/check_description_files.py and the pull-request checklist), without the network: every
URL is checked against the file in this repository it has to serve."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRIES = sorted((REPO / "docs" / "extensions-index").glob("*.json"))
SCHEMA_URL = re.compile(
    r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1\.0\.\d+\.json#?"
)
# properties of catalog-entry schema v1.0.2 (additionalProperties: false) and their JSON types
SCHEMA_PROPERTIES = {
    "$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
    "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str, "enabled": bool, "tier": int,
}
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cmake_meta() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    meta = dict(re.findall(r'set\((EXTENSION_\w+) "([^"]*)"\)', text))
    meta["project"] = re.search(r"^project\(\s*([^\s)]+)", text, re.M).group(1)
    return meta


@pytest.fixture(scope="module")
def entry() -> tuple[str, dict]:
    assert len(ENTRIES) == 1, ENTRIES
    raw = ENTRIES[0].read_bytes()
    assert b"\r" not in raw, "the index wants LF line endings only"
    return ENTRIES[0].stem, json.loads(raw)


def test_entry_matches_the_schema(entry):
    _, data = entry
    assert SCHEMA_REQUIRED <= set(data)
    assert set(data) <= set(SCHEMA_PROPERTIES), set(data) - set(SCHEMA_PROPERTIES)
    for key, value in data.items():
        assert isinstance(value, SCHEMA_PROPERTIES[key]), key
    assert SCHEMA_URL.fullmatch(data["$schema"])
    assert data.get("scm_type", "git") == "git" and 1 <= data.get("tier", 1) <= 5
    assert all(isinstance(d, str) for d in data.get("build_dependencies", []))


def test_entry_agrees_with_the_cmake_metadata(entry):
    name, data = entry
    meta = _cmake_meta()
    assert name == meta["project"], "the file name is the extension name, CMake's project()"
    assert not name.lower().startswith("slicer"), "new extension names must not start with 'Slicer'"
    assert data["category"] == meta["EXTENSION_CATEGORY"]
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "set(EXTENSION_LICENSE_FILE ${CMAKE_CURRENT_SOURCE_DIR}/LICENSE.txt)" in text  # else Slicer's licence
    assert data.get("build_dependencies", []) == meta["EXTENSION_DEPENDS"].split()
    # the repository: https, named Slicer..., the same one the homepage and image URLs point into
    url = urlsplit(data["scm_url"])
    assert url.scheme == "https" and url.netloc == "github.com"
    owner, repo = url.path.strip("/").removesuffix(".git").split("/")
    assert repo.startswith("Slicer")
    assert meta["EXTENSION_HOMEPAGE"].startswith(f"https://github.com/{owner}/{repo}")
    revision = data.get("scm_revision", "main")
    images = [meta["EXTENSION_ICONURL"], *meta["EXTENSION_SCREENSHOTURLS"].split()]
    assert len(images) >= 2, "an icon and at least one screenshot"
    for image in images:
        prefix = f"https://raw.githubusercontent.com/{owner}/{repo}/{revision}/"
        assert image.startswith(prefix), f"{image} is not a raw download URL into {owner}/{repo}@{revision}"
        path = REPO / image[len(prefix):]
        assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC, f"{image} does not serve a PNG of this repository"


def test_homepage_has_what_the_checklist_asks(entry):
    """README (the homepage): extension name, short description, an image, its module, the
    publication, the licence; LICENSE.txt at the root."""
    name, _ = entry
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"**{name}**" in readme
    assert re.search(r"!\[[^\]]*\]\([^)]+\.png\)", readme), "no picture in the README"
    assert "Brain Barriers" in readme  # the module's title
    assert "arxiv.org/abs/2206.02959" in readme
    assert "Apache-2.0" in readme and (REPO / "LICENSE.txt").is_file()


def test_repository_is_under_the_index_size_limit():
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.fail("needs a git checkout")
    files = subprocess.run([git, "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    total = sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())
    assert total < 100 * 1024 * 1024, f"{total / 2**20:.1f} MB tracked; the index refuses over 100 MB"
