"""Shared fixtures for the dicelab.theory tests: fast experiment results are computed once per session; every
test here runs with float64 as the default dtype (restored afterwards, so other packages' tests are unaffected)."""

from __future__ import annotations

import pytest
from _theory_dtype import float64_default

_CACHE: dict[tuple[str, int], object] = {}


@pytest.fixture(autouse=True)
def _float64():
    with float64_default():
        yield


def experiment(name: str, seed: int = 0):
    """Run (once per session) the fast setting of an experiment."""
    from dicelab.theory.experiments import run_experiment

    key = (name, seed)
    if key not in _CACHE:
        _CACHE[key] = run_experiment(name, mode="fast", seed=seed)
    return _CACHE[key]


@pytest.fixture(scope="session")
def run_fast():
    return experiment
