"""One trial's training: the fitness protocol of spec 02 §5.

A trial's randomness config is trained ``fitness.seeds`` times on the task; its value is the mean
validation accuracy (last epoch, or best epoch). Test accuracy is measured too, but only stored: nothing
that chooses configurations reads it. A non-finite loss ends a run as ``diverged`` (value
``fitness.diverged_value``), a validation accuracy under the cut threshold after an epoch ends it as ``cut``
(value = what it measured), as the reference study did.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from dicelab.config import RunConfig
from dicelab.data import DataBundle
from dicelab.hooks import Hook
from dicelab.randomness.config import RandomnessConfig
from dicelab.seeding import derive_seed
from dicelab.study.config import StudyConfig

__all__ = ["TrialOutcome", "trial_run_config", "run_seeds", "evaluate_config", "cut_threshold", "seed_for"]


def cut_threshold(cfg: StudyConfig, n_classes: int) -> float | None:
    t = cfg.fitness.cut_threshold
    if t is None:
        return None
    return 1.2 / n_classes if t == "auto" else float(t)


def diverged_value(cfg: StudyConfig, n_classes: int) -> float:
    v = cfg.fitness.diverged_value
    if v == "chance" or cfg.study.sampler == "cmaes":   # CMA-ES cannot take infinities
        return 1.0 / n_classes
    return float(v)


def seed_for(cfg: StudyConfig, j: int, trial_number: int | None = None, *, stream: str = "search") -> int:
    """The run seed of seed slot ``j``: shared by every trial under ``seed_policy = "common"`` (common random
    numbers), derived from the trial number under ``"fresh"``. Re-runs use their own ``stream``."""
    if cfg.fitness.seed_policy == "fresh" and trial_number is not None and stream == "search":
        return derive_seed(cfg.study.seed, f"study.fitness.trial{trial_number}.seed{j}")
    return derive_seed(cfg.study.seed, f"study.{stream}.seed{j}")


def trial_run_config(cfg: StudyConfig, randomness: RandomnessConfig, *, seed: int, epochs: int | None = None,
                     full_train: bool = False, name: str = "trial") -> RunConfig:
    """The task's run config with the trial's randomness on top of the task's own ``[randomness]`` table.

    Shuffling is a searched technique, so the engine's own reshuffle is switched off when it is searched."""
    task = cfg.task
    flat = {**task.randomness.flat(), **randomness.flat()}
    data = task.model_dump(mode="json")
    data["name"] = name
    data["seed"] = int(seed)
    data["randomness"] = RandomnessConfig.from_flat(flat).model_dump(mode="json", exclude_unset=True)
    data["train"]["progress"] = False
    if cfg.search.techniques == "all" or "shuffle" in cfg.search.techniques:
        data["train"]["shuffle"] = False
    if epochs is not None:
        data["train"]["epochs"] = int(epochs)
    if full_train:
        data["data"]["val_fraction"] = 0.0
    data["output"]["checkpoint"] = False
    return RunConfig.model_validate(data)


class _EpochWatch(Hook):
    """Ends a run whose validation accuracy falls under the cut, and reports epochs to an Optuna pruner."""

    def __init__(self, cut: float | None, trial: optuna.Trial | None, report: bool) -> None:
        self.cut, self.trial, self.report = cut, trial, report

    def on_epoch_end(self, state, metrics) -> None:
        acc = metrics.get("val_accuracy")
        if acc is None:
            return
        if self.report and self.trial is not None:
            self.trial.report(acc, state.epoch)
            if self.trial.should_prune():
                metrics["stop"] = ("pruned", f"pruned after epoch {state.epoch} (val accuracy {acc:.4f})")
                return
        if self.cut is not None and acc < self.cut:
            metrics["stop"] = ("cut", f"validation accuracy {acc:.4f} below the cut {self.cut:.4f} "
                                      f"after epoch {state.epoch}")


@dataclass
class TrialOutcome:
    """What one trial measured, before it is told to the study."""

    value: float
    status: str                       # ok | diverged | cut | pruned
    reason: str | None
    values: list[float] = field(default_factory=list)
    test_accuracies: list[float | None] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def test_accuracy(self) -> float | None:
        tests = [t for t in self.test_accuracies if t is not None]
        return sum(tests) / len(tests) if tests and len(tests) == len(self.test_accuracies) else None


def _run_value(record: dict[str, Any], select: str) -> float | None:
    epochs = [e.get("val_accuracy") for e in record["epochs"] if e.get("val_accuracy") is not None]
    if not epochs:
        return None
    return max(epochs) if select == "best_epoch" else epochs[-1]


def run_seeds(cfg: StudyConfig, randomness: RandomnessConfig, seeds: list[int], *, data: DataBundle | None,
              trial: optuna.Trial | None = None, epochs: int | None = None, full_train: bool = False,
              train_fn: Callable[..., dict[str, Any]] | None = None, cut: bool = True) -> TrialOutcome:
    """Train ``randomness`` on the task once per seed and combine the runs into one outcome.

    ``cut=False`` trains every run to its last epoch (re-runs measure a config; only the search cuts)."""
    from dicelab.train.engine import Trainer

    n_classes = data.num_classes if data is not None else None
    started = time.perf_counter()
    values: list[float] = []
    tests: list[float | None] = []
    records: list[dict[str, Any]] = []
    status, reason = "ok", None
    pruner_per_epoch = cfg.fitness.pruner in ("median", "hyperband") and trial is not None
    for j, seed in enumerate(seeds):
        run_cfg = trial_run_config(cfg, randomness, seed=seed, epochs=epochs, full_train=full_train,
                                   name=f"{cfg.study.name}-t{trial.number if trial is not None else 'x'}-s{j}")
        if train_fn is not None:
            record = train_fn(run_cfg, data)
        else:
            bundle = None if full_train else data        # full_train is another split: load it for this config
            threshold = cut_threshold(cfg, n_classes or 10) if cut else None
            trainer = Trainer(run_cfg, [_EpochWatch(threshold,
                                                    trial, pruner_per_epoch and j == 0)],
                              data=bundle, quiet=True)
            n_classes = trainer.data.num_classes
            record = trainer.fit(write=False)
        records.append(record)
        if record["status"] == "diverged":
            values.append(diverged_value(cfg, n_classes or 10))
            status, reason = "diverged", record["reason"]
        elif record["status"] == "pruned":
            values.append(_run_value(record, cfg.fitness.select) or 0.0)
            status, reason = "pruned", record["reason"]
        else:
            v = _run_value(record, cfg.fitness.select)
            if v is None:         # full-train re-runs have no validation split: test stands in
                v = record["final"].get("test_accuracy")
            values.append(float(v) if v is not None else math.nan)
            if record["status"] == "cut" and status == "ok":
                status, reason = "cut", record["reason"]
        tests.append(record["final"].get("test_accuracy"))
        if status in ("diverged", "pruned"):
            break
        if cfg.fitness.pruner == "wilcoxon" and trial is not None:
            trial.report(values[-1], j)
            if trial.should_prune():
                status, reason = "pruned", f"pruned by the Wilcoxon pruner after seed {j}"
                break
    value = sum(values) / len(values)
    return TrialOutcome(value=value, status=status, reason=reason, values=values, test_accuracies=tests,
                        records=records, duration_s=time.perf_counter() - started)


def evaluate_config(cfg: StudyConfig, randomness: RandomnessConfig, *, trial_number: int | None,
                    data: DataBundle | None, trial: optuna.Trial | None = None, epochs: int | None = None,
                    train_fn: Callable[..., dict[str, Any]] | None = None) -> TrialOutcome:
    """A search trial: ``fitness.seeds`` runs with the study's search seeds."""
    seeds = [seed_for(cfg, j, trial_number) for j in range(cfg.fitness.seeds)]
    return run_seeds(cfg, randomness, seeds, data=data, trial=trial, epochs=epochs, train_fn=train_fn)
