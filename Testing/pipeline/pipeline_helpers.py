"""Helpers shared by the pipeline tests (a CLI runner, the one-line-error check, the test grid)."""

from __future__ import annotations

import os
import subprocess
import sys

CASE_GRID = {"size": (48, 56, 46), "spacing": (2.5, 2.5, 2.5)}


def run_cli(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m brainbarriers ARGS`` in a subprocess (the way the Slicer module runs it)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "brainbarriers", *args], capture_output=True, text=True,
                           timeout=timeout, env=full_env)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Non-zero exit, one line on stderr containing every needle, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
