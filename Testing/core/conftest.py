"""Core tests run single-threaded (see the one_torch_thread fixture in Testing/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    yield
