"""Helpers for the PSO sampler tests: synthetic objectives and a resumable one-worker study.

Also run as a script by the resume test (a new process continues a stopped study):
``python _study_pso_support.py URL N_TRIALS``.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import optuna
from optuna.distributions import FloatDistribution

SHIFT = np.array([1.5, -1.5, 1.5, -1.5, 1.5])
BOX = 5.12
NAMES = [f"x{i}" for i in range(5)]


def box(dim: int = 5, bound: float = BOX) -> dict[str, FloatDistribution]:
    return {f"x{i}": FloatDistribution(-bound, bound) for i in range(dim)}


def sphere(z: np.ndarray) -> float:
    return float(np.sum(z * z))


def rastrigin(z: np.ndarray) -> float:
    return float(10 * len(z) + np.sum(z * z - 10 * np.cos(2 * np.pi * z)))


def shifted(fn):
    """A minimisation objective over the 5-D box with its optimum at SHIFT."""

    def objective(trial: optuna.Trial) -> float:
        x = np.array([trial.suggest_float(n, -BOX, BOX) for n in NAMES])
        return fn(x - SHIFT)

    return objective


def best_of(fn, sampler, n_trials: int) -> float:
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(shifted(fn), n_trials=n_trials)
    return study.best_value


# -- the resumable study of check 6 --------------------------------------------------------------------
RESUME_STUDY = "pso-resume"


_SPACE = []


def catalog_space():
    from dicelab.study.space import SearchSpace

    if not _SPACE:
        _SPACE.append(SearchSpace.from_catalog())
    return _SPACE[0]


def resume_objective(trial: optuna.Trial) -> float:
    """A deterministic synthetic fitness over dicelab's catalog space; trial 7 raises (a FAIL), trial 11 is -inf."""
    space = catalog_space()
    space.suggest(trial)
    u = space.coordinates(trial.params)
    if trial.number == 7:
        raise RuntimeError("injected fault")
    if trial.number == 11:
        return -math.inf
    scaled = (u - space.low) / (space.high - space.low)
    return float(1.0 - np.mean((scaled - 0.3) ** 2))


def resume_sampler():
    from dicelab.study.pso import PSOSampler

    return PSOSampler(catalog_space(), n_particles=8, sparse_k=4, seed=11)


def run_resume_study(url: str, n_trials: int) -> optuna.Study:
    """Create or load the study on ``url`` and run it (one worker) until it has ``n_trials`` trials."""
    from dicelab.study.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=RESUME_STUDY, storage=open_storage(url), direction="maximize",
                                sampler=resume_sampler(), load_if_exists=True)
    if not study.trials:   # a known configuration seeds the swarm, as a non-swarm trial
        study.enqueue_trial(catalog_space().params(catalog_space().low))
    missing = n_trials - sum(1 for t in study.trials if t.state != optuna.trial.TrialState.WAITING)
    if missing > 0:
        study.optimize(resume_objective, n_trials=missing, catch=(RuntimeError,))
    return study


def swarm_record(study: optuna.Study) -> list[tuple]:
    """What must be bit-identical between runs: per trial its state, value, params and pso:* attributes."""
    out = []
    for t in study.get_trials(deepcopy=False):
        attrs = {k: v for k, v in t.system_attrs.items() if k.startswith("pso:")}
        out.append((t.number, t.state.name, t.value, sorted(t.params.items()), sorted(attrs.items())))
    return out


if __name__ == "__main__":   # python _study_pso_support.py URL [URL ...] N_TRIALS
    for url in sys.argv[1:-1]:
        run_resume_study(url, int(sys.argv[-1]))
