"""What the Slicer extension installs is enough to run: real CMake (script mode, Slicer's macros
stubbed to report their install destinations) lists the installed files, the test copies just
those into a fresh folder laid out like Slicer's qt-scripted-modules, and a child Python with only
that folder on its path runs the module's logic on the installed sample CT with the installed demo
model (the logic starts the core command line from the copy, as it does inside Slicer)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cmake_script import run_module_cmake

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "SlicerBrainBarriers"
LIB_DIR = "lib/Slicer/qt-scripted-modules"

# slicerMacroBuildScriptedModule copies SCRIPTS and RESOURCES, relative paths kept, into the
# scripted-modules folder (ctkMacroCompilePythonScript); install(FILES ... DESTINATION d) puts
# each file in d. The stubs print source -> destination for both.
STUBS = f"""
set(BUILD_TESTING OFF)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR {LIB_DIR})
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR {LIB_DIR})
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(M "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${{ARGN}})
  foreach(f IN LISTS M_SCRIPTS M_RESOURCES)
    message(STATUS "INSTALL=${{CMAKE_CURRENT_SOURCE_DIR}}/${{f}}|${{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}}/${{f}}")
  endforeach()
endfunction()
function(configure_file)
endfunction()
function(install)
  cmake_parse_arguments(I "" "DESTINATION;COMPONENT" "FILES" ${{ARGN}})
  foreach(f IN LISTS I_FILES)
    get_filename_component(name ${{f}} NAME)
    message(STATUS "INSTALL=${{f}}|${{I_DESTINATION}}/${{name}}")
  endforeach()
endfunction()
include(${{MODULE_CMAKE}})
"""

CHILD = r"""
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
import brainbarriers, slicer
import SlicerBrainBarriersLib
from SlicerBrainBarriersLib import about, models
from SlicerBrainBarriersLib.logic import BrainBarriersLogic, SegmentParameters
for mod in (brainbarriers, SlicerBrainBarriersLib):
    assert Path(mod.__file__).resolve().is_relative_to(root), f"{mod.__name__} from {mod.__file__}"
entries = models.list_models()
demo = [e for e in entries if e.id == "brainbarriers-demo"]
scene = slicer.vtkMRMLScene()
node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "sample_ct")
storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
storage.SetFileName(str(root / "Resources" / "SampleData" / "sample_ct.nrrd"))
assert storage.ReadData(node)
summary = BrainBarriersLogic(scene).segment(
    SegmentParameters(inputs={"ct": node}, device="cpu", structures=["ventricles"]), timeout=300)
segmentation = summary.node.GetSegmentation()
names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
print(json.dumps({"demo_installed": [e.path for e in demo if e.downloaded], "segments": names,
                  "added": summary.added, "version": brainbarriers.__version__,
                  "about": about.acknowledgement_text()}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> list[tuple[Path, str]]:
    """(source file, install destination) of everything the module's CMakeLists installs."""
    output = run_module_cmake(STUBS, tmp_path_factory.mktemp("cmake"))
    pairs = []
    for line in output.splitlines():
        m = re.match(r"-- INSTALL=(.*)\|(.*)$", line)
        if m:
            pairs.append((Path(m.group(1)).resolve(), re.sub("/+", "/", m.group(2))))
    return pairs


def test_install_list_covers_the_runtime(installed):
    dest = {d for _, d in installed}
    for rel in ("SlicerBrainBarriers.py", "SlicerBrainBarriersLib/logic.py", "SlicerBrainBarriersLib/about.py",
                "brainbarriers/cli.py", "brainbarriers/bundles/manifest.schema.json",
                "brainbarriers/bundles/models_index.json", "Resources/UI/SlicerBrainBarriers.ui",
                "Resources/SampleData/sample_ct.nrrd", "Resources/SampleData/LICENSES/GPL-2.0.txt",
                "Resources/Licences/LICENSE.txt", "Resources/Licences/THIRD_PARTY_NOTICES.md"):
        assert f"{LIB_DIR}/{rel}" in dest, rel
    # every file of the shipped bundle, LICENSE and MODEL_CARD.md included (a bundle with a file
    # missing is refused at load)
    bundle = MODULE / "brainbarriers" / "models" / "brainbarriers-demo"
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    names = {p.name for p in bundle.iterdir() if p.is_file()} | {f["path"] for f in manifest["files"]}
    assert {"LICENSE", "MODEL_CARD.md", "manifest.json"} <= names
    for name in names:
        assert f"{LIB_DIR}/brainbarriers/models/brainbarriers-demo/{name}" in dest, name
    for src, _ in installed:
        assert src.is_file(), src


def test_module_logic_runs_from_the_installed_files(installed, tmp_path):
    prefix = tmp_path / "install"
    for src, dst in installed:
        target = prefix / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    root = prefix / LIB_DIR
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINBARRIERS_")}
    env.update(PYTHONPATH=str(root), BRAINBARRIERS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["demo_installed"] == [str(root / "brainbarriers" / "models" / "brainbarriers-demo")]
    assert result["segments"] == ["Ventricles"] and len(result["added"]) == 1
    assert result["version"] in result["about"]
