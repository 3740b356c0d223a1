"""One thread for every symmetry test (tiny tensors); the shared data and trained nets are in
``_symmetry_support.py``, imported by path, since several test folders have a conftest module."""

from __future__ import annotations

import pytest

from dicelab.threads import num_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield
