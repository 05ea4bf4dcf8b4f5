"""Which Python packages the pipeline needs inside Slicer, and how to install them safely.

Rules (from the peers' installation failures): install only after the user agreed; install torch
through the PyTorch extension's ``PyTorchUtils`` when it is there (it picks the build matching the
machine's CUDA driver), else ``torch`` from PyPI; both get the module's accepted *range*, never an
exact pin: an exact version may have no wheel for the Slicer's Python (Slicer 5.10+ runs
Python 3.12; the development pin lives in requirements-dev.txt only); never install, upgrade
or replace the SimpleITK, vtk, numpy (or requests) that Slicer bundles: they are filtered out of
every requirement list and pinned to their installed versions with a pip constraints file.
"""

from __future__ import annotations

import importlib.metadata
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: Packages Slicer ships and that must never be replaced (normalised names).
PROTECTED = ("simpleitk", "vtk", "numpy", "requests")

#: Range of torch the module accepts, and installs when torch is missing.
TORCH_REQUIREMENT = "torch>=2.1,<3"

#: The core package's runtime requirements (pyproject.toml's [project] dependencies).
CORE_REQUIREMENTS = (
    "torch>=2.1,<3",
    "numpy>=1.24",
    "SimpleITK>=2.2",
    "safetensors>=0.4",
    "tqdm>=4.60",
    "platformdirs>=3",
    "jsonschema>=4.17",
)

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return normalise(match.group(1))


def filter_requirements(requirements: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split requirements into (allowed, dropped): dropped are the packages Slicer owns."""
    allowed, dropped = [], []
    for req in requirements:
        if not req.strip() or req.strip().startswith("#"):
            continue
        (dropped if requirement_name(req) in PROTECTED else allowed).append(req.strip())
    return allowed, dropped


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def satisfied(requirement: str) -> bool:
    """True when the package is installed in a version inside the requirement's range."""
    version = installed_version(requirement_name(requirement))
    if version is None:
        return False
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no packaging: presence is all we can check
        return True
    return Requirement(requirement).specifier.contains(version, prereleases=True)


@dataclass
class DependencyStatus:
    missing: list[str]
    torch_version: str | None

    @property
    def ok(self) -> bool:
        return not self.missing

    def line(self) -> str:
        """One line for the panel."""
        if self.ok:
            return f"Dependencies ready (torch {self.torch_version})."
        return "Missing: " + ", ".join(self.missing) + ". Click Install (asks first)."


def check(requirements: Sequence[str] = CORE_REQUIREMENTS) -> DependencyStatus:
    allowed, _ = filter_requirements(requirements)
    missing = [r for r in allowed if not satisfied(r)]
    return DependencyStatus(missing=missing, torch_version=installed_version("torch"))


def protected_constraints() -> list[str]:
    """``name==version`` for every protected package installed now (a pip constraints file)."""
    return [f"{n}=={v}" for n in PROTECTED if (v := installed_version(n))]


@dataclass
class InstallPlan:
    torch: str | None  # torch requirement to install, or None
    packages: list[str]  # other requirements, protected ones already removed
    use_pytorch_utils: bool

    def describe(self) -> str:
        parts = []
        if self.torch:
            how = "through the PyTorch extension" if self.use_pytorch_utils else "from PyPI"
            parts.append(f"{self.torch} ({how}, about 1-3 GB)")
        parts.extend(self.packages)
        return "Install " + ", ".join(parts) + "? Slicer's own SimpleITK, vtk and numpy are left untouched."


def plan(status: DependencyStatus, pytorch_utils_available: bool) -> InstallPlan:
    torch = next((r for r in status.missing if requirement_name(r) == "torch"), None)
    others = [r for r in status.missing if requirement_name(r) != "torch"]
    return InstallPlan(
        torch=None if torch is None else TORCH_REQUIREMENT,
        packages=filter_requirements(others)[0],
        use_pytorch_utils=pytorch_utils_available,
    )


def install(
    install_plan: InstallPlan,
    confirm: Callable[[str], bool],
    pip_install: Callable[[list[str]], None],
    install_torch: Callable[[str], object] | None = None,
) -> bool:
    """Install what the plan lists after ``confirm(question)`` returned True.

    Args:
        install_plan: from :func:`plan`.
        confirm: asks the user; nothing happens unless it returns True.
        pip_install: runs ``pip install <args>`` (Slicer: ``slicer.util.pip_install``).
        install_torch: installs torch given a version specifier (PyTorchUtils), or None to use pip.
    Returns:
        True when the installation ran.
    """
    if install_plan.torch is None and not install_plan.packages:
        return True
    if not confirm(install_plan.describe()):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "slicer-owned.txt"
        constraints.write_text("\n".join(protected_constraints()) + "\n", encoding="utf-8")
        if install_plan.torch:
            if install_plan.use_pytorch_utils and install_torch is not None:
                install_torch(install_plan.torch[len("torch"):])
            else:
                pip_install([install_plan.torch, "-c", str(constraints)])
        if install_plan.packages:
            packages, _ = filter_requirements(install_plan.packages)  # belt and braces
            pip_install([*packages, "-c", str(constraints)])
    return True


def pip_commands(install_plan: InstallPlan, python: str, constraints: Path) -> list[list[str]]:
    """The ``pip install`` command lines for the plan's pip part, for a child process.

    The widget runs them one after the other in a child process and shows pip's output in the
    log, so Slicer stays responsive (Slicer 5.10's ``slicer.util.pip_install`` blocks the GUI).
    torch goes through pip here only when PyTorchUtils is not there to pick the build.
    """
    constraints.write_text("\n".join(protected_constraints()) + "\n", encoding="utf-8")
    commands = []
    if install_plan.torch and not install_plan.use_pytorch_utils:
        commands.append([python, "-m", "pip", "install", install_plan.torch, "-c", str(constraints)])
    packages, _ = filter_requirements(install_plan.packages)
    if packages:
        commands.append([python, "-m", "pip", "install", *packages, "-c", str(constraints)])
    return commands


def subprocess_pip_install(args: list[str]) -> None:
    """``pip install`` into this interpreter (outside Slicer)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)
