"""One thread for every randomness test: tiny tensors on two threads under load are many times slower."""

import pytest

from dicelab.threads import num_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield
