"""Core tests run single-threaded: several test processes share two cores, and OpenMP threads
that oversubscribe them stall badly (measured: 0.25 s vs 1.7 s per training step)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
