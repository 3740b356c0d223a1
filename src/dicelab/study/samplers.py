"""Samplers by name (spec 02 §3): the storage-backed PSO, the reference random search and Optuna baselines.

``make_sampler(name, space, seed=...)`` builds one of :data:`SAMPLERS`:

* ``pso`` — :class:`dicelab.study.pso.PSOSampler` with the ``[study.pso]`` options;
* ``random-sparse`` — the reference random search: every trial is ``space.sample_sparse(rng, 4)`` with
  ``rng = numpy.random.default_rng([seed, trial.number])``, so trial n is the same draw in any run;
* ``random``, ``tpe``, ``cmaes``, ``qmc`` — Optuna's samplers, seeded;
* ``grid-ofat`` — one factor at a time: each coordinate in turn through 10 levels (a categorical one through its
  choices), every other coordinate at its off value (no off value: the middle of its range); trial n is the
  n-th cell of that sequence, cycling when it is exhausted.
"""

from __future__ import annotations

import importlib.util
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial

from dicelab.errors import ConfigError, DicelabError
from dicelab.study.pso import PSOSampler, box_space

__all__ = ["SAMPLERS", "PSO_OPTIONS", "make_sampler", "SparseRandomSampler", "OneFactorSampler"]

SAMPLERS = ("pso", "random-sparse", "random", "tpe", "cmaes", "qmc", "grid-ofat")
PSO_OPTIONS = ("n_particles", "inertia", "cognitive", "social", "velocity_clamp", "sparse_k", "prescreen",
               "max_iterations", "patience", "wait_s")
OFAT_LEVELS = 10


def _coordinate_space(space: Any) -> Any:
    return box_space(space) if isinstance(space, Mapping) else space


def _fallback(seed: int, study: optuna.Study, trial: FrozenTrial, name: str, dist: BaseDistribution) -> Any:
    """A random value for a parameter outside the declared space, reproducible per (seed, trial, name)."""
    ss = np.random.SeedSequence([seed, trial.number, zlib.crc32(name.encode())])
    return RandomSampler(seed=int(ss.generate_state(1)[0])).sample_independent(study, trial, name, dist)


class _SpaceSampler(BaseSampler):
    """A sampler that picks a whole position per trial number from the space's coordinates."""

    def __init__(self, space: Any, *, seed: int | None = None) -> None:
        self._space = _coordinate_space(space)
        self.seed = int(np.random.SeedSequence().entropy) if seed is None else int(seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._space.distributions()

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        params = self._space.params(self.position(trial.number))
        return {name: value for name, value in params.items() if name in search_space}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return _fallback(self.seed, study, trial, param_name, param_distribution)

    def position(self, number: int) -> np.ndarray:   # pragma: no cover - overridden
        raise NotImplementedError


class SparseRandomSampler(_SpaceSampler):
    """The reference random search: ``space.sample_sparse(default_rng([seed, n]), k)`` for trial n."""

    def __init__(self, space: Any, *, k: int | None = 4, seed: int | None = None) -> None:
        super().__init__(space, seed=seed)
        n_optional = int(np.count_nonzero(self._space.optional))
        self.k = None if k is None else min(int(k), n_optional)

    def position(self, number: int) -> np.ndarray:
        return np.asarray(self._space.sample_sparse(np.random.default_rng([self.seed, number]), self.k),
                          dtype=np.float64)


class OneFactorSampler(_SpaceSampler):
    """One factor at a time: coordinate j through its levels while the others stay at the base position."""

    def __init__(self, space: Any, *, levels: int = OFAT_LEVELS, seed: int | None = None) -> None:
        super().__init__(space, seed=seed)
        dims = getattr(self._space, "dims", None)
        dists = self._space.distributions()
        low, high = self._space.low, self._space.high
        self.base = (low + high) / 2.0
        self.cells: list[tuple[int, float]] = []      # (coordinate index, level) in trial order
        for j, name in enumerate(self._space.names):
            dim = None if dims is None else dims[j]
            if dim is not None and getattr(dim, "off", None) is not None:
                self.base[j] = dim.off_coordinate()
            if isinstance(dists[name], CategoricalDistribution):
                grid = np.arange(len(dists[name].choices), dtype=np.float64)
            else:
                grid = np.linspace(low[j], high[j], levels)
            self.cells.extend((j, float(u)) for u in grid)

    def position(self, number: int) -> np.ndarray:
        j, u = self.cells[number % len(self.cells)]
        x = self.base.copy()
        x[j] = u
        return x


def make_sampler(name: str, space: Any, *, seed: int | None, pso_options: Mapping[str, Any] | None = None,
                 n_trials: int | None = None) -> BaseSampler:
    """The sampler called ``name`` over ``space`` (a SearchSpace or a dict of distributions).

    ``pso_options`` are the ``[study.pso]`` fields (ignored by other samplers). ``n_trials`` (the study budget)
    caps TPE's random start-up phase at a tenth of the budget, so a small study still gets model-based trials.
    Unknown names and options raise :class:`ConfigError`."""
    if name not in SAMPLERS:
        raise ConfigError(f"study.sampler: unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")
    if name == "pso":
        options = dict(pso_options or {})
        unknown = sorted(set(options) - set(PSO_OPTIONS))
        if unknown:
            raise ConfigError(f"study.pso: unknown option {unknown[0]!r} (known: {', '.join(PSO_OPTIONS)})")
        if isinstance(space, Mapping) and "sparse_k" not in options:
            options["sparse_k"] = None
        return PSOSampler(space, seed=seed, **options)
    if name == "random-sparse":
        return SparseRandomSampler(space, k=4, seed=seed)
    if name == "grid-ofat":
        return OneFactorSampler(space, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        startup = 10 if n_trials is None else max(2, min(10, int(n_trials) // 10))
        with warnings.catch_warnings():   # multivariate/constant_liar are flagged experimental by optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                              constant_liar=True)
    if name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise DicelabError("sampler 'cmaes' needs the Python package 'cmaes' (pip install cmaes)")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    # qmc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
