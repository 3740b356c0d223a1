"""Re-runs that separate randomness from tuning (spec 02 §6): best vs default, and one-factor ablation.

Every re-run trains a fixed config on seeds disjoint from the search seeds (common across arms, so the
comparisons are paired). Results are stored as trials of the child study ``<name>/rerun`` in the same
storage, keyed by ``(arm, seed)``: an interrupted analysis resumes, and a finished one is not retrained.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from dicelab.errors import ConfigError
from dicelab.randomness.config import RandomnessConfig
from dicelab.randomness.registry import technique
from dicelab.study.config import StudyConfig
from dicelab.study.objective import run_seeds, seed_for
from dicelab.study.space import SearchSpace

__all__ = ["best_trial", "best_config", "tuning_only", "default_config", "ablation_arms", "run_arms",
           "best_vs_default", "ablation", "LEVELS"]

LEVELS = ("data", "model", "optimization", "learning")


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The COMPLETE trial with the highest finite value (by validation; test accuracy is never read)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    if not done:
        raise ConfigError(f"study {study.study_name!r} has no complete trial with a finite value yet")
    return max(done, key=lambda t: (t.value, -t.number))


def best_config(study: optuna.Study, space: SearchSpace) -> RandomnessConfig:
    return space.config(best_trial(study).params)


def _switch_off(config: RandomnessConfig, names: Iterable[str]) -> RandomnessConfig:
    names = set(names)
    flat = {k: v for k, v in config.flat().items() if k.partition(".")[0] not in names}
    return RandomnessConfig.from_flat(flat)


def tuning_only(space: SearchSpace, config: RandomnessConfig) -> RandomnessConfig:
    """``config`` with every optional technique off: what plain tuning of the always-searched knobs gives."""
    return _switch_off(config, [d.technique for d in space.dims if d.optional])


def default_config(cfg: StudyConfig) -> RandomnessConfig:
    """The task's default: optional techniques off, always-searched knobs at the run config's own values
    (optimizer, lr and batch size inherit ``[task.train]``; shuffling is the task's ``train.shuffle``)."""
    table: dict[str, Any] = {}
    if "shuffle" in cfg.space().names:
        table["shuffle"] = bool(cfg.task.train.shuffle)
    return RandomnessConfig.model_validate(table)


def ablation_arms(space: SearchSpace, config: RandomnessConfig) -> dict[str, RandomnessConfig]:
    """One arm per technique that is on in ``config`` (switched off alone), then one per level (all of the
    level's techniques that are on, switched off together)."""
    on = []
    for d in space.dims:
        if d.off is None:
            continue                 # a knob without an off value (optimizer, lr, batch size) cannot be ablated
        if config.is_on(d.technique):
            on.append(d.technique)
    arms = {f"off:{name}": _switch_off(config, [name]) for name in on}
    for level in LEVELS:
        members = [n for n in on if str(technique(n).level) == level]
        if members:
            arms[f"level:{level}"] = _switch_off(config, members)
    return arms


@dataclass(frozen=True)
class _Job:
    arm: str
    slot: int
    seed: int
    config_json: str


def _run_job(cfg_json: str, job: _Job, epochs: int | None, full_train: bool, threads: int | None) -> dict[str, Any]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    cfg = StudyConfig.model_validate_json(cfg_json)
    randomness = RandomnessConfig.model_validate_json(job.config_json)
    out = run_seeds(cfg, randomness, [job.seed], data=_data_for(cfg, full_train), epochs=epochs,
                    full_train=full_train, cut=False)     # a re-run measures the config to its last epoch
    return {"value": out.values[0], "test": out.test_accuracies[0], "status": out.status, "reason": out.reason}


_DATA_CACHE: dict[str, Any] = {}


def _data_for(cfg: StudyConfig, full_train: bool):
    if full_train:
        return None
    key = cfg.task.data.model_dump_json()
    if key not in _DATA_CACHE:
        from dicelab.train.engine import load_data_for

        _DATA_CACHE[key] = load_data_for(cfg.task)
    return _DATA_CACHE[key]


def _rerun_study(study: optuna.Study) -> optuna.Study:
    return optuna.create_study(study_name=f"{study.study_name}/rerun", storage=study._storage,
                               direction="maximize", load_if_exists=True)


def run_arms(study: optuna.Study, cfg: StudyConfig, arms: dict[str, RandomnessConfig], *, seeds: int = 5,
             epochs: int | None = None, full_train: bool = False, workers: int = 1) -> pd.DataFrame:
    """Train every arm on ``seeds`` re-run seeds (stored in ``<name>/rerun``; finished ones are reused).
    Returns one row per (arm, seed): arm, slot, seed, value, test, status."""
    child = _rerun_study(study)
    tag = f"e{epochs}-f{int(full_train)}"
    stored = {(t.user_attrs.get("arm"), t.user_attrs.get("slot")): t
              for t in child.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.user_attrs.get("tag") == tag}
    jobs = []
    for arm, config in arms.items():
        for j in range(seeds):
            if (arm, j) in stored and stored[(arm, j)].user_attrs.get("config") == config.model_dump_json():
                continue
            jobs.append(_Job(arm, j, seed_for(cfg, j, stream="rerun"), config.model_dump_json()))
    cfg_json = cfg.to_json()

    def store(job: _Job, res: dict[str, Any]) -> None:
        value = res["value"] if res["value"] is not None and not math.isnan(res["value"]) else float("-inf")
        trial = optuna.trial.create_trial(
            value=value, params={}, distributions={},
            user_attrs={"arm": job.arm, "slot": job.slot, "seed": job.seed, "tag": tag, "config": job.config_json,
                        "test_accuracy": res["test"], "status": res["status"], "reason": res["reason"]})
        child.add_trial(trial)

    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            store(job, _run_job(cfg_json, job, epochs, full_train, None))
    else:
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [(job, pool.submit(_run_job, cfg_json, job, epochs, full_train, threads)) for job in jobs]
            for job, fut in futures:
                store(job, fut.result())
    rows = []
    for t in child.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if a.get("tag") == tag and a.get("arm") in arms and a.get("slot", seeds) < seeds \
                and a.get("config") == arms[a["arm"]].model_dump_json():
            rows.append({"arm": a["arm"], "slot": a["slot"], "seed": a["seed"], "value": t.value,
                         "test": a.get("test_accuracy"), "status": a.get("status")})
    frame = pd.DataFrame(rows, columns=["arm", "slot", "seed", "value", "test", "status"])
    return frame.drop_duplicates(["arm", "slot"], keep="last").sort_values(["arm", "slot"]).reset_index(drop=True)


def _wilcoxon(diffs: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) < 2 or np.all(diffs == 0):
        return math.nan
    return float(wilcoxon(diffs).pvalue)


def _arm_rows(runs: pd.DataFrame, arms: list[str], reference: str) -> list[dict[str, Any]]:
    ref = runs[runs.arm == reference].set_index("slot")
    rows = []
    for arm in arms:
        r = runs[runs.arm == arm].set_index("slot")
        test = r["test"].astype(float)
        val = r["value"].astype(float)
        paired = (test - ref["test"].astype(float)).dropna()
        paired_val = (val - ref["value"].astype(float)).dropna()
        rows.append({"arm": arm, "n": len(r), "val_mean": val.mean(), "val_std": val.std(ddof=1),
                     "test_mean": test.mean(), "test_std": test.std(ddof=1),
                     "diff_val": paired_val.mean() if arm != reference else 0.0,
                     "diff_test": paired.mean() if arm != reference else 0.0,
                     "p_wilcoxon": _wilcoxon(paired.to_numpy()) if arm != reference else math.nan})
    return rows


def best_vs_default(study: optuna.Study, cfg: StudyConfig, space: SearchSpace, *, seeds: int = 5,
                    final_epochs: int | None = None, full_train: bool = False, workers: int = 1) -> pd.DataFrame:
    """(a) the best trial's config, (b) the same with every optional technique off, (c) the task's default;
    each on ``seeds`` fresh seeds. Paired differences to (a) and the Wilcoxon signed-rank p-value."""
    best = best_config(study, space)
    arms = {"best": best, "tuning_only": tuning_only(space, best), "default": default_config(cfg)}
    runs = run_arms(study, cfg, arms, seeds=seeds, epochs=final_epochs, full_train=full_train, workers=workers)
    return pd.DataFrame(_arm_rows(runs, list(arms), "best"))


def ablation(study: optuna.Study, cfg: StudyConfig, space: SearchSpace, *, seeds: int = 5, by_level: bool = True,
             workers: int = 1, final_epochs: int | None = None, full_train: bool = False) -> pd.DataFrame:
    """Switch off each technique that is on in the best config alone, then each level as a group; the
    table gives the change of mean test (and validation) accuracy against the best config's re-run."""
    best = best_config(study, space)
    arms = {"best": best, **{k: v for k, v in ablation_arms(space, best).items()
                             if by_level or not k.startswith("level:")}}
    runs = run_arms(study, cfg, arms, seeds=seeds, epochs=final_epochs, full_train=full_train, workers=workers)
    rows = _arm_rows(runs, [a for a in arms if a != "best"], "best")
    out = pd.DataFrame(rows, columns=["arm", "n", "val_mean", "val_std", "test_mean", "test_std", "diff_val",
                                      "diff_test", "p_wilcoxon"])
    out.insert(0, "kind", ["level" if a.startswith("level:") else "technique" for a in out.arm])
    out.insert(0, "factor", [a.partition(":")[2] for a in out.arm])
    return out.drop(columns="arm").rename(columns={"diff_test": "delta_test", "diff_val": "delta_val"})
