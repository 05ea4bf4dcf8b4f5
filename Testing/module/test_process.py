"""The process runner on real child processes: progress lines, failure, cancel of the whole tree."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from SlicerBrainBarriersLib.process import PipelineProcess, ProgressEvent


def _child(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", textwrap.dedent(code)]


def test_parse_lines():
    e = ProgressEvent.from_line('{"stage": "coarse", "fraction": 0.25, "message": "locating"}\n')
    assert (e.stage, e.fraction, e.message) == ("coarse", 0.25, "locating")
    assert ProgressEvent.from_line("Traceback (most recent call last):").stage == "log"
    assert ProgressEvent.from_line('{"not": "progress"}').stage == "log"
    assert ProgressEvent.from_line('{"stage": "x"}', source="stderr").stage == "log"


def test_progress_and_result():
    proc = PipelineProcess(
        _child(
            """
            import json, sys, time
            for i, stage in enumerate(["load", "coarse", "fine"]):
                print(json.dumps({"stage": stage, "fraction": i / 3, "message": stage}), flush=True)
                time.sleep(0.05)
            print("a plain log line", flush=True)
            print("a warning", file=sys.stderr, flush=True)
            print(json.dumps({"stage": "done", "fraction": 1.0, "message": "ok", "outputs": {"labels": "l.nii.gz"}}))
            """
        )
    )
    events = []
    assert proc.wait(timeout=30, on_event=events.append) == "done"
    stages = [e.stage for e in events]
    assert [s for s in stages if s != "log"] == ["load", "coarse", "fine", "done"]
    assert {e.message for e in events if e.stage == "log"} == {"a plain log line", "a warning"}
    fractions = [e.fraction for e in events if e.stage not in ("log",)]
    assert fractions == sorted(fractions)
    assert proc.result.outputs == {"labels": "l.nii.gz"}
    assert proc.last_progress.stage == "fine"


def test_failure_message_is_the_error_line():
    proc = PipelineProcess(
        _child(
            """
            import json, sys
            print(json.dumps({"stage": "error", "message": "T1 file not found: x.nrrd"}))
            sys.exit(2)
            """
        )
    )
    assert proc.wait(timeout=30) == "failed"
    assert proc.returncode == 2
    assert proc.failure_message() == "T1 file not found: x.nrrd"


def test_exit_zero_without_done_line_is_a_failure():
    proc = PipelineProcess(_child("print('nothing useful')"))
    assert proc.wait(timeout=30) == "failed"
    assert "without a result" in proc.failure_message()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the grandchild")
def test_cancel_kills_the_process_tree_and_poll_never_blocks():
    proc = PipelineProcess(
        _child(
            """
            import json, subprocess, sys, time
            grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            print(json.dumps({"stage": "load", "fraction": 0.1, "message": str(grandchild.pid)}), flush=True)
            time.sleep(120)
            """
        )
    )
    deadline = time.monotonic() + 30
    grandchild = None
    slowest_poll = 0.0
    while grandchild is None and time.monotonic() < deadline:
        t0 = time.perf_counter()
        for event in proc.poll():
            if event.stage == "load":
                grandchild = int(event.message)
        slowest_poll = max(slowest_poll, time.perf_counter() - t0)
        time.sleep(0.02)
    assert grandchild is not None and _alive(grandchild) and _alive(proc.pid)
    assert slowest_poll < 0.05  # the UI timer never waits on the child
    t0 = time.monotonic()
    proc.cancel()
    assert time.monotonic() - t0 < 10
    assert proc.state == "cancelled"
    time.sleep(0.2)
    assert not _alive(proc.pid)
    assert not _alive(grandchild)


def test_wait_timeout_cancels():
    proc = PipelineProcess(_child("import time; print('{\"stage\": \"x\", \"fraction\": 0}', flush=True); time.sleep(60)"))
    t0 = time.monotonic()
    assert proc.wait(timeout=1.0) == "cancelled"
    assert time.monotonic() - t0 < 8
    assert proc.last_progress.stage == "x"
    assert proc.returncode is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_children_end_when_the_parent_interpreter_exits(tmp_path):
    """Quitting Slicer must not leave a segmentation running in the background."""
    parent = (
        "import sys, time; sys.path.insert(0, sys.argv[1])\n"
        "from SlicerBrainBarriersLib.process import PipelineProcess\n"
        "p = PipelineProcess([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(p.pid, flush=True)\n"
    )
    module_dir = str(Path(__file__).resolve().parents[2] / "SlicerBrainBarriers")
    out = subprocess.run([sys.executable, "-c", parent, module_dir], capture_output=True, text=True, timeout=60, check=True)
    child = int(out.stdout.strip())
    time.sleep(0.2)
    assert not _alive(child)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cancel_without_waiting_returns_at_once_and_ends_a_stubborn_child():
    """The GUI thread cancels: it must not wait out SIGTERM grace and SIGKILL (up to 13 s before)."""
    proc = PipelineProcess(
        _child(
            """
            import json, signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print(json.dumps({"stage": "load", "fraction": 0.1}), flush=True)
            time.sleep(120)
            """
        )
    )
    deadline = time.monotonic() + 30
    while proc.last_progress is None and time.monotonic() < deadline:
        proc.poll()
        time.sleep(0.02)
    ended = []
    t0 = time.perf_counter()
    proc.cancel(grace=1.0, wait=False, on_ended=lambda: ended.append(time.monotonic()))
    assert time.perf_counter() - t0 < 0.1
    assert proc.state == "cancelled" and not proc.ended
    deadline = time.monotonic() + 20
    while not ended and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ended and proc.ended and not _alive(proc.pid)


def test_python_slicer_is_required_inside_slicer(monkeypatch, tmp_path):
    """Inside Slicer sys.executable is the Slicer application: never start the pipeline with it."""
    import slicer
    from SlicerBrainBarriersLib import process

    home = tmp_path / "Slicer"
    (home / "bin").mkdir(parents=True)
    monkeypatch.setattr(slicer, "app", type("App", (), {"slicerHome": str(home)})(), raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(process.PythonNotFound, match="PythonSlicer was not found"):
        process.python_executable()
    launcher = home / "bin" / "PythonSlicer"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    assert process.python_executable() == str(launcher)
    monkeypatch.delattr(slicer, "app")
    assert process.python_executable() == sys.executable
