"""Shared pytest set-up: headless Qt, the module's Lib package on sys.path, modest threading."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "SlicerBrainBarriers"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread: test processes share two cores, and OpenMP threads that
    oversubscribe them stall badly (measured: 0.25 s vs 1.7 s per training step)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
