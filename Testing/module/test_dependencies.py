"""Dependency installation inside Slicer: asks first, prefers PyTorchUtils, never touches
Slicer's own SimpleITK, vtk or numpy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from SlicerBrainBarriersLib import dependencies as deps

REPO = Path(__file__).resolve().parents[2]


def test_filter_drops_slicer_packages_in_any_spelling():
    reqs = ["torch>=2.1,<3", "SimpleITK>=2.2", "simpleitk==2.5", "numpy>=1.24", "NumPy", "vtk==9.6.2",
            "VTK", "safetensors>=0.4", "platformdirs>=3", "requests", "  # comment", "", "simple-itk-tools"]
    allowed, dropped = deps.filter_requirements(reqs)
    assert allowed == ["torch>=2.1,<3", "safetensors>=0.4", "platformdirs>=3", "simple-itk-tools"]
    assert {deps.requirement_name(r) for r in dropped} == {"simpleitk", "numpy", "vtk", "requests"}


def test_module_requirements_match_pyproject():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert sorted(deps.CORE_REQUIREMENTS) == sorted(project["dependencies"])
    assert deps.TORCH_REQUIREMENT in project["dependencies"]


def test_check_sees_this_environment():
    status = deps.check()
    assert status.ok, status.missing  # the dev environment has everything
    assert status.torch_version
    missing = deps.check(["torch>=2.1,<3", "surely-not-installed-pkg>=1"])
    assert missing.missing == ["surely-not-installed-pkg>=1"]
    assert "surely-not-installed-pkg" in missing.line()
    assert not deps.satisfied("torch<1")  # out of range counts as missing


class Recorder:
    def __init__(self, answer=True):
        self.answer = answer
        self.questions, self.pip_calls, self.torch_calls = [], [], []

    def confirm(self, question):
        self.questions.append(question)
        return self.answer

    def pip(self, args):
        constraints = Path(args[args.index("-c") + 1]).read_text(encoding="utf-8")
        self.pip_calls.append((list(args), constraints))

    def torch(self, spec):
        self.torch_calls.append(spec)


def _missing_everything():
    return deps.DependencyStatus(missing=list(deps.CORE_REQUIREMENTS), torch_version=None)


def test_nothing_happens_without_consent():
    rec = Recorder(answer=False)
    plan = deps.plan(_missing_everything(), pytorch_utils_available=True)
    assert deps.install(plan, rec.confirm, rec.pip, rec.torch) is False
    assert len(rec.questions) == 1 and "SimpleITK" in rec.questions[0]
    assert rec.pip_calls == [] and rec.torch_calls == []


def test_install_uses_pytorch_utils_and_protects_slicer_packages():
    rec = Recorder()
    plan = deps.plan(_missing_everything(), pytorch_utils_available=True)
    assert plan.torch == deps.TORCH_REQUIREMENT == "torch>=2.1,<3"  # a range Slicer's Python can satisfy
    assert deps.install(plan, rec.confirm, rec.pip, rec.torch)
    assert rec.torch_calls == [">=2.1,<3"]
    (args, constraints), = rec.pip_calls
    names = {deps.requirement_name(a) for a in args if not a.startswith("-") and not a.endswith(".txt")}
    assert names == {"safetensors", "tqdm", "platformdirs", "jsonschema"}
    assert not names & set(deps.PROTECTED)
    # Slicer's packages are pinned to what is installed, so pip cannot replace them as a dependency
    for name in ("numpy", "simpleitk", "vtk"):
        version = deps.installed_version(name)
        assert f"{name}=={version}" in constraints.splitlines()


def test_install_without_pytorch_extension_asks_pip_for_the_range():
    rec = Recorder()
    plan = deps.plan(deps.DependencyStatus(missing=["torch>=2.1,<3"], torch_version=None), pytorch_utils_available=False)
    assert deps.install(plan, rec.confirm, rec.pip, rec.torch)
    assert rec.torch_calls == []
    (args, _), = rec.pip_calls
    assert args[0] == "torch>=2.1,<3"


def test_pip_commands_for_a_child_process(tmp_path):
    """The panel runs pip in a child process (Slicer 5.10's pip_install blocks the GUI)."""
    constraints = tmp_path / "c.txt"
    plan = deps.plan(_missing_everything(), pytorch_utils_available=False)
    torch_cmd, rest_cmd = deps.pip_commands(plan, "/slicer/bin/PythonSlicer", constraints)
    assert torch_cmd[:5] == ["/slicer/bin/PythonSlicer", "-m", "pip", "install", "torch>=2.1,<3"]
    assert {deps.requirement_name(a) for a in rest_cmd[4:-2]} == {"safetensors", "tqdm", "platformdirs", "jsonschema"}
    assert rest_cmd[-2:] == ["-c", str(constraints)]
    assert f"numpy=={deps.installed_version('numpy')}" in constraints.read_text().splitlines()
    with_utils = deps.pip_commands(deps.plan(_missing_everything(), pytorch_utils_available=True), "py", constraints)
    assert len(with_utils) == 1 and "torch>=2.1,<3" not in with_utils[0]
