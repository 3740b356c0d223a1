"""Fixtures for the dicelab.optim tests: one intra-op thread (tiny tensors), the teacher-student task."""

from __future__ import annotations

import pytest

from dicelab.threads import num_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield


@pytest.fixture(scope="session")
def ts_data():
    from dicelab.optim.bench import TASKS, load_task

    return load_task(TASKS["teacher-student"])
