"""Fixtures of the generation tests (the shared ones of every area are in tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core CPU: with one torch thread no OpenMP threads wait on each other (with two,
    steps ran 17-70x slower here). Use it per module: pytestmark = pytest.mark.usefixtures("one_torch_thread")."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
