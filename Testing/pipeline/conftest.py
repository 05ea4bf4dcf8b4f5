"""Fixtures of the pipeline tests: a tiny random bundle, a small phantom case, a CLI runner."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from phantom import write_case  # noqa: E402
from pipeline_helpers import CASE_GRID  # noqa: E402
from tiny_bundle import write_tiny_bundle  # noqa: E402

#: Coarse test grids keep the tiny networks fast: model 4 mm, coarse 8 mm.
TEST_SPACING = (4.0, 4.0, 4.0)
TEST_COARSE = (8.0, 8.0, 8.0)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", spacing=TEST_SPACING, coarse_spacing=TEST_COARSE)


@pytest.fixture(scope="session")
def case_files(tmp_path_factory) -> dict[str, Path]:
    return write_case(tmp_path_factory.mktemp("case"), "case", **CASE_GRID)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINBARRIERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BRAINBARRIERS_MODELS_INDEX", raising=False)
