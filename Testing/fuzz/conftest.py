"""Fixtures of the fuzz suite: the pipeline tests' helpers, a tiny bundle, and the printed case count."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "pipeline"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from fuzz_counts import COUNTS  # noqa: E402


@pytest.fixture(scope="session")
def fuzz_bundle(tmp_path_factory) -> Path:
    from tiny_bundle import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("fuzzbundle") / "tiny", spacing=(4.0, 4.0, 4.0),
                             coarse_spacing=(8.0, 8.0, 8.0))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINBARRIERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BRAINBARRIERS_MODELS_INDEX", raising=False)


def pytest_terminal_summary(terminalreporter):
    total = sum(COUNTS.values())
    if total:
        terminalreporter.write_line(
            f"fuzz suite: {total} cases run ({COUNTS['reader']} through the reader, {COUNTS['cli']} through "
            f"brainbarriers.cli.main, {COUNTS['cli_subprocess']} through the CLI in a subprocess)"
        )
