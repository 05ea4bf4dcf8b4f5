"""Core tests run single-threaded (see the one_torch_thread fixture in Testing/conftest.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # phantoms.py


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    yield
