"""The module's CMakeLists evaluated by real CMake in script mode, with Slicer's macros stubbed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "SlicerBrainBarriers"


def run_module_cmake(stubs: str, folder: Path) -> str:
    """Run ``stubs`` (CMake code ending in ``include(${MODULE_CMAKE})``) on the module's CMakeLists;
    returns CMake's output. The pinned cmake of requirements-dev.txt (next to this interpreter) is
    used, else the system's; without either the test fails (``make env`` installs it)."""
    beside = Path(sys.executable).with_name("cmake")
    cmake = str(beside) if beside.is_file() else shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake is not installed (requirements-dev.txt pins it; `make env`)")
    module_cmake = folder / "module.cmake"
    # script mode refuses CONFIGURE_DEPENDS (a build-time re-glob): drop it, keep everything else
    module_cmake.write_text((MODULE / "CMakeLists.txt").read_text(encoding="utf-8").replace("CONFIGURE_DEPENDS", ""))
    script = folder / "script.cmake"
    script.write_text(stubs, encoding="utf-8")
    out = subprocess.run([cmake, f"-DMODULE_CMAKE={module_cmake}", "-P", str(script)],
                         cwd=MODULE, capture_output=True, text=True, check=True)
    return out.stdout + out.stderr
