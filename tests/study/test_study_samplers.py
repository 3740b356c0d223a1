"""make_sampler (spec 02 §3): every named sampler runs on dicelab's space, the reference random search and
one-factor-at-a-time grid are reproducible per trial number, and bad names/options are one-line ConfigErrors."""

from __future__ import annotations

import importlib.util

import numpy as np
import optuna
import pytest
from _study_pso_support import box

from dicelab.errors import ConfigError, DicelabError
from dicelab.study.pso import PSOSampler
from dicelab.study.samplers import SAMPLERS, OneFactorSampler, SparseRandomSampler, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def space():
    from dicelab.study.space import SearchSpace

    return SearchSpace.from_catalog()


def _run(sampler, space, n):
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        space.suggest(trial)
        u = space.coordinates(trial.params)
        return -float(np.sum(((u - space.low) / (space.high - space.low) - 0.5) ** 2))

    study.optimize(objective, n_trials=n)
    return study


def test_names_match_the_config():
    from dicelab.study.config import SAMPLER_NAMES

    assert SAMPLERS == SAMPLER_NAMES


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n != "cmaes"])
def test_every_sampler_runs_on_the_catalog_space(name, space):
    study = _run(make_sampler(name, space, seed=0, n_trials=12), space, 12)
    assert len(study.trials) == 12 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert all(set(t.params) == set(space.names) for t in study.trials)
    again = _run(make_sampler(name, space, seed=0, n_trials=12), space, 12)
    assert [t.params for t in study.trials] == [t.params for t in again.trials]     # seeded


def test_cmaes_needs_its_package(space):
    if importlib.util.find_spec("cmaes") is None:
        with pytest.raises(DicelabError, match="cmaes"):
            make_sampler("cmaes", space, seed=0)
    else:
        study = _run(make_sampler("cmaes", space, seed=0), space, 6)
        assert len(study.trials) == 6


def test_pso_from_config_options(space):
    from dicelab.study.config import PSOOptions

    sampler = make_sampler("pso", space, seed=3, pso_options=PSOOptions(n_particles=4).model_dump())
    assert isinstance(sampler, PSOSampler) and sampler.n_particles == 4 and sampler.sparse_k == 4
    study = _run(sampler, space, 6)
    assert [t.system_attrs["pso:t"] for t in study.trials] == [0, 0, 0, 0, 1, 1]
    # a plain dict of distributions has no optional techniques: sparse_k defaults to None there
    assert make_sampler("pso", box(2), seed=0).sparse_k is None


def test_random_sparse_is_the_reference_random_search(space):
    sampler = make_sampler("random-sparse", space, seed=5)
    assert isinstance(sampler, SparseRandomSampler)
    study = _run(sampler, space, 20)
    optional = np.flatnonzero(space.optional)
    for trial in study.trials:
        u = space.coordinates(trial.params)
        want = space.sample_sparse(np.random.default_rng([5, trial.number]), 4)
        assert trial.params == space.params(want)
        assert sum(space.dims[j].value(u[j]) != space.dims[j].off for j in optional) == 4


def test_grid_ofat_moves_one_factor_at_a_time(space):
    sampler = make_sampler("grid-ofat", space, seed=0)
    assert isinstance(sampler, OneFactorSampler)
    n_cells = len(sampler.cells)
    cats = {d.name: len(d.choices) for d in space.dims if d.kind == "categorical"}
    assert n_cells == 10 * (len(space.dims) - len(cats)) + sum(cats.values())
    base = sampler.base
    for j, d in enumerate(space.dims):                        # optional knobs sit at their off value
        if d.optional:
            assert d.value(base[j]) == d.off
    positions = np.array([sampler.position(n) for n in range(n_cells)])
    changed = positions != base
    assert (changed.sum(axis=1) <= 1).all()
    for j, d in enumerate(space.dims):
        levels = [u for (i, u) in sampler.cells if i == j]
        if d.kind == "categorical":
            assert levels == list(range(len(d.choices)))
        else:
            np.testing.assert_array_equal(levels, np.linspace(space.low[j], space.high[j], 10))
    np.testing.assert_array_equal(sampler.position(n_cells + 3), sampler.position(3))   # cycles
    study = _run(make_sampler("grid-ofat", space, seed=0), space, 12)
    assert [t.params for t in study.trials] == [space.params(sampler.position(n)) for n in range(12)]


def test_bad_names_and_options(space):
    with pytest.raises(ConfigError, match=r"'annealing'.*pso, random-sparse, random, tpe, cmaes, qmc, grid-ofat"):
        make_sampler("annealing", space, seed=0)
    with pytest.raises(ConfigError, match="study.pso: unknown option 'swarm_size'"):
        make_sampler("pso", space, seed=0, pso_options={"swarm_size": 3})
    with pytest.raises(ConfigError, match="n_particles"):
        make_sampler("pso", space, seed=0, pso_options={"n_particles": 0})
