"""Release facts: one version everywhere, the licences declared where users and Slicer look for them.

The built wheel itself is checked by scripts/check_wheel.sh (CI), which installs it in a fresh
environment and compares the wheel's version with ``--version`` and a real run's report.
"""

from __future__ import annotations

import re
from pathlib import Path

import brainbarriers
import pytest
from brainbarriers import cli
from brainbarriers import export as export_module
from brainbarriers.bundles import list_models, load_index
from setuptools.config.pyprojecttoml import read_configuration
from SlicerBrainBarriersLib import about

REPO = Path(__file__).resolve().parents[2]
VERSION = brainbarriers.__version__


def test_one_version_everywhere(capsys):
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    # the wheel's version: what setuptools resolves from pyproject's dynamic version
    project = read_configuration(REPO / "pyproject.toml", expand=True)["project"]
    assert project["version"] == VERSION
    # brainbarriers --version
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"brainbarriers {VERSION}"
    # the run report's brainbarriers_version is the package's own (not a copy of the literal)
    assert export_module.__version__ is brainbarriers.__version__
    # the Slicer module's About text
    assert about.version_text() == f"Brain Barriers {VERSION}"
    assert about.version_text() in about.acknowledgement_text()
    # the newest released heading of CHANGELOG.md
    headings = re.findall(r"^## \[([^\]]+)\]", (REPO / "CHANGELOG.md").read_text(encoding="utf-8"), re.M)
    assert [h for h in headings if h != "Unreleased"][0] == VERSION


def test_no_second_version_literal():
    """Only brainbarriers/__init__.py spells the version out among the package sources."""
    pattern = re.compile(r"""(__version__|version)\s*=\s*["']\d+\.\d+\.\d+["']""")
    offenders = []
    for folder in ("SlicerBrainBarriers", "training"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "__init__.py" and path.parent.name == "brainbarriers":
                continue
            if pattern.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_code_licence_is_the_declared_one():
    pyproject = read_configuration(REPO / "pyproject.toml", expand=False)["project"]
    assert pyproject["license"] == "Apache-2.0"
    text = (REPO / "LICENSE.txt").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the whole licence, not an excerpt
    for pattern in pyproject["license-files"]:
        assert list(REPO.glob(pattern)), f"license-files entry {pattern} matches nothing"


def test_third_party_notices_cover_every_licence():
    notices = (REPO / "THIRD_PARTY_NOTICES.md").read_text(encoding="utf-8")
    for needed in ("Apache-2.0", "GPL-2", "CC BY-NC 4.0", "CC-BY-NC-4.0", "OASIS", "Neuromorphometrics"):
        assert needed in notices, needed
    # every relative link points at a file or folder of the repository
    for target in re.findall(r"\]\(([^)#:]+)\)", notices):
        assert (REPO / target).exists(), target
    # the module's acknowledgement names the same licences
    for _, licence, _ in about.LICENCES:
        assert licence in notices, licence
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "THIRD_PARTY_NOTICES.md" in readme and "LICENSE.txt" in readme


def test_models_list_shows_each_licence(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BRAINBARRIERS_CACHE", str(tmp_path / "cache"))  # shipped bundles and the index only
    monkeypatch.delenv("BRAINBARRIERS_MODELS_INDEX", raising=False)
    manifest_licences = {}
    for row in list_models():
        assert row["licence"], f"{row['id']}@{row['version']} has no licence"
        manifest_licences[f"{row['id']}@{row['version']}"] = row["licence"]
    demo = next(e for e in load_index() if e["id"] == "brainbarriers-demo")
    assert manifest_licences[f"brainbarriers-demo@{demo['version']}"] == demo["licence"] == "CC-BY-NC-4.0"
    assert cli.main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "licence" in out.splitlines()[0]
    for model, licence in manifest_licences.items():
        assert re.search(rf"^{re.escape(model)}\s.*\s{re.escape(licence)}\s", out, re.M), out
