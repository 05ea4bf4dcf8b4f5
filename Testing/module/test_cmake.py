"""The extension's CMake files: metadata, and every Python file/resource the module needs is listed
(the module CMakeLists is evaluated by real CMake in script mode with Slicer's macros stubbed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cmake_script import run_module_cmake

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "SlicerBrainBarriers"

STUBS = """
set(BUILD_TESTING ON)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/qt-scripted-modules)
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(M "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  message(STATUS "NAME=${M_NAME}")
  message(STATUS "GENERIC_TESTS=${M_WITH_GENERIC_TESTS}")
  foreach(f IN LISTS M_SCRIPTS)
    message(STATUS "SCRIPT=${f}")
  endforeach()
  foreach(f IN LISTS M_RESOURCES)
    message(STATUS "RESOURCE=${f}")
  endforeach()
endfunction()
function(configure_file src dst)
  message(STATUS "COPY=${dst}")
endfunction()
function(install)
  message(STATUS "INSTALL=${ARGV1}")
endfunction()
function(slicer_add_python_unittest)
  message(STATUS "UNITTEST=${ARGN}")
endfunction()
include(${MODULE_CMAKE})
"""


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    output = run_module_cmake(STUBS, tmp_path_factory.mktemp("cmake"))
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        m = re.match(r"-- (\w+)=(.*)", line)
        if m:
            found.setdefault(m.group(1), []).append(m.group(2))
    return found


def _files(pattern: str) -> set[str]:
    return {p.relative_to(MODULE).as_posix() for p in MODULE.glob(pattern) if p.is_file() and "__pycache__" not in p.parts}


def test_every_python_file_is_listed(listed):
    assert listed["NAME"] == ["SlicerBrainBarriers"]
    assert listed["GENERIC_TESTS"] == ["TRUE"]
    scripts = set(listed["SCRIPT"])
    expected = {"SlicerBrainBarriers.py"} | _files("SlicerBrainBarriersLib/**/*.py") | _files("brainbarriers/**/*.py")
    assert expected == scripts
    assert "brainbarriers/cli.py" in scripts and "SlicerBrainBarriersLib/logic.py" in scripts


def test_every_resource_is_listed(listed):
    resources = set(listed["RESOURCE"])
    assert {"Resources/UI/SlicerBrainBarriers.ui", "Resources/Icons/SlicerBrainBarriers.png"} <= resources
    assert _files("brainbarriers/**/*.json") <= resources
    models = {f for f in _files("brainbarriers/models/**/*") if not f.endswith((".py", ".pyc"))}
    assert models <= resources
    assert _files("brainbarriers/atlas/*") <= resources and "brainbarriers/atlas/t1.nii.gz" in resources
    for rel in resources:
        assert (MODULE / rel).is_file(), rel


def test_sample_case_travels_with_the_module(listed):
    copies = {Path(p).name for p in listed.get("COPY", [])}
    assert {"sample_ct.nrrd", "sample_t1.nrrd", "sample_t2.nrrd"} <= copies
    assert listed["UNITTEST"] == ["SCRIPT;SlicerBrainBarriers.py"]


def test_extension_metadata():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    meta = dict(re.findall(r'set\((EXTENSION_\w+) "([^"]*)"\)', text))
    assert meta["EXTENSION_CATEGORY"] == "Segmentation"
    assert meta["EXTENSION_DESCRIPTION"] and meta["EXTENSION_CONTRIBUTORS"] and meta["EXTENSION_HOMEPAGE"]
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        rel = meta[key].split("/main/", 1)[1]
        assert (REPO / rel).is_file(), f"{key} points at {rel}, which is not in the repository"
    assert "add_subdirectory(SlicerBrainBarriers)" in text
