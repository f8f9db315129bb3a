"""Model tests run torch on one thread: on a small shared CPU, two threads that wait on each
other are many times slower than one (measured 13x for a tiny training step)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
