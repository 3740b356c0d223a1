"""The optimizer benchmark of spec 05 §7: R-SGD against SGD, momentum, R-SGD's mean-field momentum schedule,
Nesterov and Adam on the teacher-student task, digits and MNIST-1D.

For each (task, seed) every optimizer starts from the same weights (the run's ``init`` stream, as in
``dicelab train``) and sees the same batches (the ``data.order`` stream). After every epoch the whole
training and test sets are evaluated in eval mode. A lean loop rather than the :class:`~dicelab.train.Trainer`
is used because the protocol needs the full training set evaluated every epoch, a scheduled baseline that
is not a registry optimizer, and R-SGD's Γ and reset fraction at every step.

Metrics (per task × optimizer × seed): e* = SGD's final training error at the same seed;
``steps_to_target`` = steps per epoch × the first epoch with training error <= e*; ``ratio_budget`` =
steps_to_target / SGD's total steps; ``ratio_first`` = steps_to_target / SGD's own steps_to_target (the
same pair for SGD's final training loss); final / minimum test error; generalization gap; optimizer-state
bytes; and time ratios against ``torch.optim.SGD(momentum=0.9)`` (interleaved rounds, thread time).

    >>> result = run(tasks=["teacher-student"], seeds=[0, 1], epochs=20)   # doctest: +SKIP
    >>> print_report(result)                                                # doctest: +SKIP
"""

from __future__ import annotations

import copy
import csv
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dicelab.config import RunConfig
from dicelab.data import DataBundle, load_dataset
from dicelab.errors import ConfigError
from dicelab.optim.baselines import BENCH_OPTIMIZERS, build
from dicelab.optim.rsgd import ReinforcedSGD
from dicelab.seeding import SeedBank
from dicelab.threads import num_threads
from dicelab.train.engine import build_model_for, evaluate
from dicelab.train.record import library_versions, utc_now, write_json_atomic

__all__ = ["Task", "TASKS", "RunCurve", "Target", "BenchResult", "run", "train_run", "time_optimizers",
           "run_metrics", "evaluate_targets", "write", "print_report", "load_task", "init_model",
           "default_out_dir", "QUICK", "FULL"]

ADAM_LR = 1e-3
REFERENCE = "torch SGD(momentum=0.9)"   # what the time ratios divide by
FULL = {"seeds": (0, 1, 2, 3, 4), "epochs": 100, "timing_rounds": 30}
QUICK = {"seeds": (0, 1), "epochs": 20, "timing_rounds": 10}
TIMING_WARMUP, TIMING_STEPS, TIMING_ITERATIONS = 5, 20, 5
MIN_SEEDS_FOR_TARGETS = 5


@dataclass(frozen=True)
class Task:
    """One benchmark task: a registered dataset (official train / test split) and an MLP student."""

    name: str
    dataset: str
    widths: tuple[int, ...]
    activation: str
    batch_size: int
    standardize: bool = False
    description: str = ""


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("teacher-student", "teacher", (100,), "tanh", 32, False,
         "x ~ N(0, I_50), labels from a fixed tanh teacher 50-100-10; student 50-100-10 tanh; 1,000 / 10,000"),
    Task("digits", "digits", (256, 256), "relu", 32, True,
         "scikit-learn digits, 1,000 / 797, standardised; MLP 64-256-256-10 ReLU"),
    Task("mnist1d", "mnist1d", (256, 256), "relu", 100, False,
         "MNIST-1D generated locally, 4,000 / 1,000; MLP 40-256-256-10 ReLU"),
)}


@dataclass
class RunCurve:
    """One training run. Curves have ``epochs + 1`` entries: index 0 is the initial model."""

    task: str
    optimizer: str
    seed: int
    lr: float
    steps_per_epoch: int
    train_size: int
    train_error: list[float | None]
    train_loss: list[float | None]
    test_error: list[float | None]
    test_loss: list[float | None]
    finite: bool
    params: int
    state_numel: int
    state_bytes: int
    generator_bytes: int
    seconds: float
    gamma: list[float] | None = None          # R-SGD: Γ used at each step
    reset_fraction: list[float] | None = None  # R-SGD: measured fraction of reset elements at each step

    @property
    def epochs(self) -> int:
        return len(self.train_error) - 1


@dataclass
class Target:
    """One target of spec 05 §9 with its measured value (``met`` is None when it could not be evaluated)."""

    id: str
    name: str
    measured: float | None
    threshold: str
    met: bool | None
    note: str = ""

    @property
    def verdict(self) -> str:
        return "not evaluated" if self.met is None else ("MET" if self.met else "NOT MET")


@dataclass
class BenchResult:
    """Everything a benchmark run measured; :meth:`write` stores it, :func:`print_report` prints it."""

    settings: dict[str, Any]
    runs: list[RunCurve]
    metrics: list[dict[str, Any]]
    timing: dict[str, dict[str, dict[str, float]]]
    targets: list[Target]
    runtime_s: float = 0.0
    files: list[str] = field(default_factory=list)

    def rows(self, task: str) -> list[dict[str, Any]]:
        return [m for m in self.metrics if m["task"] == task]

    def summary(self, task: str, optimizer: str, key: str) -> tuple[float, float, float] | None:
        """(median, min, max) of metric ``key`` over seeds; a missing value (target never reached) counts
        as +inf, so the median is inf when most seeds never reached it. None if there are no rows."""
        vals = [m[key] for m in self.metrics if m["task"] == task and m["optimizer"] == optimizer]
        if not vals:
            return None
        vals = [math.inf if v is None else v for v in vals]
        return statistics.median(vals), min(vals), max(vals)

    def to_json(self) -> dict[str, Any]:
        return {"dicelab_bench": "optimizers", "settings": self.settings, "runtime_s": self.runtime_s,
                "targets": [asdict(t) | {"verdict": t.verdict} for t in self.targets], "timing": self.timing,
                "metrics": self.metrics, "runs": [asdict(r) for r in self.runs], "versions": library_versions(),
                "finished_at": utc_now()}


# -- one run ---------------------------------------------------------------------------------------
def load_task(task: Task) -> DataBundle:
    """The task's official train / test split (no validation split: the protocol evaluates the test set)."""
    return load_dataset(task.dataset, val_fraction=0.0, standardize=task.standardize)


def init_model(task: Task, data: DataBundle, seed: int) -> nn.Module:
    """The student, initialised from the ``init`` stream of root seed ``seed`` (as ``dicelab train`` does)."""
    cfg = RunConfig.model_validate({"seed": seed, "data": {"name": task.dataset},
                                    "model": {"name": "mlp", "widths": list(task.widths),
                                              "activation": task.activation}})
    return build_model_for(cfg, data, SeedBank(seed))


def _state_size(optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    """(numel, bytes) of the tensors in ``optimizer.state``; 0-d tensors (Adam's step counter) excluded."""
    numel = nbytes = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                numel += value.numel()
                nbytes += value.numel() * value.element_size()
    return numel, nbytes


def _generator_bytes(optimizer: torch.optim.Optimizer) -> int:
    if isinstance(optimizer, ReinforcedSGD):
        return sum(g.get_state().numel() for g in optimizer.generators.values())
    return 0


def _lr_for(name: str, lr: float, lr_override: dict[str, float]) -> float:
    return lr_override.get(name, ADAM_LR if name == "adam" else lr)


def train_run(task: Task, data: DataBundle, optimizer: str, seed: int, *, epochs: int, lr: float,
              options: dict[str, Any] | None = None, model: nn.Module | None = None,
              record_steps: bool = True) -> RunCurve:
    """Train ``task``'s student with benchmark optimizer ``optimizer`` for ``epochs`` epochs at root seed
    ``seed``; evaluate the whole training and test sets before training and after every epoch."""
    seeds = SeedBank(seed)
    model = model if model is not None else init_model(task, data, seed)
    opt = build(optimizer, model.parameters(), lr=lr, seed=seed, **(options or {}))
    rsgd = opt if isinstance(opt, ReinforcedSGD) else None
    order_generator = seeds.generator("data.order")
    x_all, y_all = data.train.x, data.train.y
    n, bs = len(data.train), task.batch_size
    curve: dict[str, list[float | None]] = {k: [] for k in ("train_error", "train_loss", "test_error", "test_loss")}
    gammas: list[float] | None = [] if rsgd is not None and record_steps else None
    resets: list[float] | None = [] if rsgd is not None and record_steps else None

    def record() -> bool:
        tr, te = evaluate(model, data.train), evaluate(model, data.test)
        curve["train_error"].append(1.0 - tr["accuracy"])
        curve["train_loss"].append(tr["loss"])
        curve["test_error"].append(1.0 - te["accuracy"])
        curve["test_loss"].append(te["loss"])
        return math.isfinite(tr["loss"]) and math.isfinite(te["loss"])

    t0 = time.perf_counter()
    finite = record()
    model.train()
    for epoch in range(epochs):
        if not finite:
            break
        if rsgd is not None:
            rsgd.set_epoch(epoch)
        order = torch.randperm(n, generator=order_generator)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if gammas is not None:
                gammas.append(rsgd.reinforce_prob())
            opt.step()
            if resets is not None:
                resets.append(rsgd.last_reset_fraction)
        finite = record()
    for values in curve.values():  # a run stopped early keeps the curve length of the others
        values.extend([None] * (epochs + 1 - len(values)))
    numel, nbytes = _state_size(opt)
    return RunCurve(task.name, optimizer, seed, lr, math.ceil(n / bs), n, **curve, finite=finite,
                    params=sum(p.numel() for p in model.parameters()), state_numel=numel, state_bytes=nbytes,
                    generator_bytes=_generator_bytes(opt), seconds=time.perf_counter() - t0,
                    gamma=gammas, reset_fraction=resets)


# -- metrics ---------------------------------------------------------------------------------------
def _first_at_or_below(values: Sequence[float | None], target: float) -> int | None:
    for epoch, v in enumerate(values):
        if epoch >= 1 and v is not None and v <= target:
            return epoch
    return None


def _ratio(a: int | None, b: int | None) -> float | None:
    return None if a is None or not b else a / b


def run_metrics(curve: RunCurve, sgd: RunCurve | None) -> dict[str, Any]:
    """The per-run row of the table and the CSV; targets come from ``sgd`` (same task and seed)."""
    spe = curve.steps_per_epoch
    final_train, final_test = curve.train_error[-1], curve.test_error[-1]
    tests = [(v, e) for e, v in enumerate(curve.test_error) if v is not None]
    min_test, min_epoch = min(tests) if tests else (None, None)
    row: dict[str, Any] = {
        "task": curve.task, "optimizer": curve.optimizer, "seed": curve.seed, "lr": curve.lr,
        "finite": curve.finite, "epochs": curve.epochs, "steps_per_epoch": spe,
        "final_train_error": final_train, "final_train_loss": curve.train_loss[-1],
        "final_test_error": final_test, "final_test_loss": curve.test_loss[-1],
        "min_test_error": min_test, "min_test_epoch": min_epoch,
        "gap": None if final_train is None or final_test is None else final_test - final_train,
        "params": curve.params, "state_numel": curve.state_numel, "state_bytes": curve.state_bytes,
        "state_multiple_of_p": curve.state_numel / curve.params, "generator_bytes": curve.generator_bytes,
        "seconds": curve.seconds,
    }
    for kind, series, sgd_series in (("", curve.train_error, sgd.train_error if sgd else None),
                                     ("loss_", curve.train_loss, sgd.train_loss if sgd else None)):
        target = sgd_series[-1] if sgd_series is not None else None
        if target is None:
            row.update({f"{kind}target": None, f"{kind}steps_to_target": None, f"{kind}ratio_budget": None,
                        f"{kind}ratio_first": None})
            continue
        epoch = _first_at_or_below(series, target)
        sgd_epoch = _first_at_or_below(sgd_series, target)
        steps = None if epoch is None else epoch * spe
        sgd_steps = None if sgd_epoch is None else sgd_epoch * sgd.steps_per_epoch
        row.update({f"{kind}target": target, f"{kind}steps_to_target": steps,
                    f"{kind}ratio_budget": _ratio(steps, sgd.epochs * sgd.steps_per_epoch),
                    f"{kind}ratio_first": _ratio(steps, sgd_steps)})
    return row


# -- time ratios -----------------------------------------------------------------------------------
def time_optimizers(task: Task, data: DataBundle, names: Sequence[str], *, seed: int = 0,
                    rounds: int = 30, warmup: int = TIMING_WARMUP, options: dict[str, dict[str, Any]] | None = None,
                    clock: Callable[[], float] = time.thread_time) -> dict[str, dict[str, float]]:
    """Median time ratios of ``optimizer.step()`` alone and of a full iteration (forward, backward, step)
    against ``torch.optim.SGD(momentum=0.9)``, from ``rounds`` interleaved rounds of 20 steps and 5
    iterations per optimizer (the order rotates every round). Thread time ignores other load.

    Every optimizer runs at lr 0 here: the cost of the kernels does not depend on the values, and the
    timing models can then never drift into overflow or denormals.
    """
    options = options or {}
    base = init_model(task, data, seed)
    entries: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
    for name in (REFERENCE, *names):
        model = copy.deepcopy(base)
        opt = (torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9) if name == REFERENCE
               else build(name, model.parameters(), lr=0.0, seed=seed, **options.get(name, {})))
        entries[name] = (model, opt)
    x_all, y_all = data.train.x, data.train.y
    bs = task.batch_size
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    batches = [(x_all[order[i:i + bs]], y_all[order[i:i + bs]])
               for i in range(0, len(order) - bs + 1, bs)][:TIMING_ITERATIONS]

    def iteration(model: nn.Module, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        loss = F.cross_entropy(model(batch[0]), batch[1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for model, opt in entries.values():
        for k in range(warmup):
            iteration(model, opt, batches[k % len(batches)])
    step_t: dict[str, list[float]] = {name: [] for name in entries}
    iter_t: dict[str, list[float]] = {name: [] for name in entries}
    names_all = list(entries)
    for r in range(rounds):
        for name in names_all[r % len(names_all):] + names_all[:r % len(names_all)]:
            model, opt = entries[name]
            t0 = clock()
            for _ in range(TIMING_STEPS):
                opt.step()
            t1 = clock()
            for k in range(TIMING_ITERATIONS):
                iteration(model, opt, batches[k % len(batches)])
            t2 = clock()
            step_t[name].append((t1 - t0) / TIMING_STEPS)
            iter_t[name].append((t2 - t1) / TIMING_ITERATIONS)
    out = {}
    for name in names:
        out[name] = {
            "step_ratio": statistics.median(a / b for a, b in zip(step_t[name], step_t[REFERENCE], strict=True)),
            "iteration_ratio": statistics.median(a / b for a, b in zip(iter_t[name], iter_t[REFERENCE], strict=True)),
            "step_us": statistics.median(step_t[name]) * 1e6,
            "iteration_us": statistics.median(iter_t[name]) * 1e6,
        }
    out[REFERENCE] = {"step_ratio": 1.0, "iteration_ratio": 1.0, "step_us": statistics.median(step_t[REFERENCE]) * 1e6,
                      "iteration_us": statistics.median(iter_t[REFERENCE]) * 1e6}
    return out


# -- targets (spec 05 §9, [B]) ---------------------------------------------------------------------
def _median_of(values: Iterable[float | None]) -> float | None:
    vals = [math.inf if v is None else v for v in values]
    return statistics.median(vals) if vals else None


def evaluate_targets(result: BenchResult) -> list[Target]:
    """The benchmark targets with measured values; those that need >= 5 seeds are only judged then."""
    seeds = result.settings["seeds"]
    enough = len(seeds) >= MIN_SEEDS_FOR_TARGETS
    few = f"needs >= {MIN_SEEDS_FOR_TARGETS} seeds (ran {len(seeds)})"
    ts = "teacher-student"
    targets: list[Target] = []

    def by(task: str, opt: str) -> dict[int, dict[str, Any]]:
        return {m["seed"]: m for m in result.metrics if m["task"] == task and m["optimizer"] == opt}

    def judged(value: float | None, ok: bool, seeds_needed: bool = True) -> bool | None:
        if value is None or (seeds_needed and not enough):
            return None
        return ok

    rsgd_rows = [m for m in result.metrics if m["optimizer"] == "rsgd"]
    if rsgd_rows:
        worst = max(m["state_multiple_of_p"] for m in rsgd_rows)
        bytes_ts = [m for m in rsgd_rows if m["task"] == ts]
        note = (f"{bytes_ts[0]['state_bytes']:,} bytes for P = {bytes_ts[0]['params']:,} on {ts}; generator "
                f"{bytes_ts[0]['generator_bytes']:,} bytes apart") if bytes_ts else ""
        targets.append(Target("4", "R-SGD optimizer state (multiple of P)", worst, "= 1 (4P bytes in float32)",
                              worst == 1.0, note))
    timing = result.timing.get("mnist1d", {}).get("rsgd")
    targets.append(Target(
        "8", "full iteration time R-SGD / SGD(momentum 0.9), MLP 40-256-256-10, batch 100 (mnist1d)",
        timing["iteration_ratio"] if timing else None, "<= 1.30",
        judged(timing and timing["iteration_ratio"], bool(timing) and timing["iteration_ratio"] <= 1.30, False),
        (f"element-mode step() alone {timing['step_ratio']:.2f}x (printed, not a target); tensor/step "
         "granularity: benchmarks/rsgd_step_time.py") if timing else "mnist1d not run"))
    rs, sgd_rows = by(ts, "rsgd"), by(ts, "sgd")
    if rs and sgd_rows:
        rb = _median_of(m["ratio_budget"] for m in rs.values())
        rf = _median_of(m["ratio_first"] for m in rs.values())
        e_star = statistics.median(m["final_train_error"] for m in sgd_rows.values())
        targets.append(Target("9", f"{ts}: R-SGD steps to SGD's final training error / SGD's steps (ratio_budget, "
                                   "median over seeds)", rb, "<= 0.70", judged(rb, rb is not None and rb <= 0.70),
                              f"ratio_first median {rf:.3g}; e* median {e_star:.4f}" + ("" if enough else f"; {few}")))
    adam = by(ts, "adam")
    if rs and adam:
        diffs = [rs[s]["gap"] - adam[s]["gap"] for s in rs if s in adam
                 and rs[s]["gap"] is not None and adam[s]["gap"] is not None]
        d = statistics.median(diffs) if diffs else None
        targets.append(Target("10", f"{ts}: paired generalization-gap difference R-SGD - Adam (median)", d, "<= 0",
                              judged(d, d is not None and d <= 0.0),
                              (f"range {min(diffs):+.4f} to {max(diffs):+.4f}" if diffs else "") +
                              ("" if enough else f"; {few}")))
    sched = by(ts, "sgd_momentum_schedule")
    if rs and sched and sgd_rows:
        a = _median_of(m["ratio_budget"] for m in sched.values())
        b = _median_of(m["ratio_budget"] for m in rs.values())
        diff = abs(a - b) if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) else None
        targets.append(Target("11a", f"{ts}: |ratio_budget(sgd_momentum_schedule) - ratio_budget(R-SGD)|", diff,
                              "<= 0.10", judged(diff, diff is not None and diff <= 0.10),
                              f"schedule {a:.3g}, R-SGD {b:.3g}" + ("" if enough else f"; {few}")))
    bad = [f"{c.task}/{c.optimizer}/s{c.seed}" for c in result.runs if not c.finite]
    targets.append(Target("11b", "runs with a non-finite loss (all tasks, optimizers, seeds)", float(len(bad)), "= 0",
                          not bad, ", ".join(bad[:5])))
    rd, sd = by("digits", "rsgd"), by("digits", "sgd")
    if rd and sd:
        wins = [rd[s]["final_train_loss"] < sd[s]["final_train_loss"] for s in rd if s in sd
                and rd[s]["final_train_loss"] is not None and sd[s]["final_train_loss"] is not None]
        frac = sum(wins) / len(wins) if wins else None
        med = (statistics.median(m["final_train_loss"] for m in rd.values()),
               statistics.median(m["final_train_loss"] for m in sd.values()))
        targets.append(Target("12", "digits: seeds where R-SGD's final training loss < SGD's (fraction)", frac,
                              "= 1 (every seed)", judged(frac, frac == 1.0),
                              f"median final training loss R-SGD {med[0]:.3g}, SGD {med[1]:.3g}" +
                              ("" if enough else f"; {few}")))
    return targets


# -- the benchmark ---------------------------------------------------------------------------------
def _check_names(kind: str, names: Iterable[str], known: Iterable[str]) -> list[str]:
    names, known = list(names), list(known)
    for name in names:
        if name not in known:
            raise ConfigError(f"--{kind}: unknown name {name!r} (known: {', '.join(known)})")
    if not names:
        raise ConfigError(f"--{kind}: empty list")
    return list(dict.fromkeys(names))


def run(*, tasks: Sequence[str] | None = None, optimizers: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None, epochs: int | None = None, lr: float = 0.02,
        lr_override: dict[str, float] | None = None, rsgd: dict[str, Any] | None = None, threads: int | None = 1,
        quick: bool = False, timing_rounds: int | None = None, out: str | Path | None = None,
        plots: bool = True, progress: bool = False) -> BenchResult:
    """Run the optimizer benchmark and return its :class:`BenchResult` (written to ``out`` if given).

    ``quick`` changes the defaults to 2 seeds, 20 epochs, 10 timing rounds (explicit arguments win).
    SGD is always run: it defines the targets e*. ``lr`` is η for every optimizer but Adam (1e-3);
    ``lr_override`` maps optimizer names to their own η; ``rsgd`` holds :class:`ReinforcedSGD` options.
    """
    started = time.perf_counter()
    preset = QUICK if quick else FULL
    tasks = _check_names("tasks", tasks if tasks is not None else list(TASKS), TASKS)
    optimizers = _check_names("optimizers", optimizers if optimizers is not None else list(BENCH_OPTIMIZERS),
                              BENCH_OPTIMIZERS)
    if "sgd" not in optimizers:
        optimizers = ["sgd", *optimizers]
    seeds = list(seeds if seeds is not None else preset["seeds"])
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"--seeds: need one or more integers >= 0 (got {seeds!r})")
    seeds = list(dict.fromkeys(seeds))
    epochs = preset["epochs"] if epochs is None else epochs
    timing_rounds = preset["timing_rounds"] if timing_rounds is None else timing_rounds
    if epochs < 1:
        raise ConfigError(f"--epochs: must be >= 1 (got {epochs})")
    if timing_rounds < 0:
        raise ConfigError(f"--timing-rounds: must be >= 0 (got {timing_rounds})")
    if not lr > 0:
        raise ConfigError(f"--lr: must be > 0 (got {lr})")
    lr_override = dict(lr_override or {})
    _check_names("lr-override", lr_override, BENCH_OPTIMIZERS) if lr_override else None
    for name, value in lr_override.items():
        if not (isinstance(value, int | float) and value > 0):
            raise ConfigError(f"--lr-override: {name}={value!r} must be a number > 0")
    rsgd = dict(rsgd or {})
    try:  # every R-SGD option checked before anything runs
        ReinforcedSGD([torch.zeros(1, requires_grad=True)], lr=lr, **rsgd)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--rsgd: {exc}") from None
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and (out_dir / "bench_optimizers.json").exists():
        raise ConfigError(f"{out_dir}: already holds a benchmark result; choose another --out folder")
    options = {"rsgd": rsgd}
    settings = {"tasks": tasks, "optimizers": optimizers, "seeds": seeds, "epochs": epochs, "lr": lr,
                "lrs": {name: _lr_for(name, lr, lr_override) for name in optimizers}, "rsgd": rsgd,
                "threads": threads, "quick": quick, "timing_rounds": timing_rounds,
                "task_details": {t: asdict(TASKS[t]) for t in tasks}}
    runs: list[RunCurve] = []
    timing: dict[str, dict[str, dict[str, float]]] = {}
    with num_threads(threads), _Progress(len(tasks) * len(seeds) * len(optimizers) + len(tasks),
                                         enabled=progress) as bar:
        for task_name in tasks:
            task = TASKS[task_name]
            data = load_task(task)
            for seed in seeds:
                for name in optimizers:
                    bar.describe(f"{task_name} seed {seed} {name}")
                    runs.append(train_run(task, data, name, seed, epochs=epochs,
                                          lr=_lr_for(name, lr, lr_override), options=options.get(name)))
                    bar.advance()
            bar.describe(f"{task_name} timing")
            if timing_rounds:
                timing[task_name] = time_optimizers(task, data, optimizers, seed=seeds[0], rounds=timing_rounds,
                                                    options=options)
            bar.advance()
    sgd_of = {(c.task, c.seed): c for c in runs if c.optimizer == "sgd"}
    metrics = []
    for c in runs:
        row = run_metrics(c, sgd_of.get((c.task, c.seed)))
        t = timing.get(c.task, {}).get(c.optimizer, {})
        row.update(step_ratio=t.get("step_ratio"), iteration_ratio=t.get("iteration_ratio"))
        metrics.append(row)
    result = BenchResult(settings, runs, metrics, timing, [])
    result.targets = evaluate_targets(result)
    result.runtime_s = time.perf_counter() - started
    if out_dir is not None:
        write(result, out_dir, plots=plots)
    return result


def default_out_dir() -> Path:
    """``runs/bench-optimizers-<UTC time>`` (created only when the results are written)."""
    return Path("runs") / f"bench-optimizers-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


CSV_COLUMNS = ("task", "optimizer", "seed", "lr", "finite", "epochs", "steps_per_epoch", "target", "steps_to_target",
               "ratio_budget", "ratio_first", "loss_target", "loss_steps_to_target", "loss_ratio_budget",
               "loss_ratio_first", "final_train_error", "final_train_loss", "final_test_error", "final_test_loss",
               "min_test_error", "min_test_epoch", "gap", "params", "state_numel", "state_bytes",
               "state_multiple_of_p", "generator_bytes", "step_ratio", "iteration_ratio", "seconds")


def write(result: BenchResult, out: str | Path, *, plots: bool = True) -> list[str]:
    """Write ``bench_optimizers.json``, ``bench_optimizers.csv`` and (``plots``) the PNG figures to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "bench_optimizers.csv"]
    with files[0].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.metrics)
    if plots:
        from dicelab.optim.bench_plots import render_all

        files.extend(render_all(result, out))
    files.append(out / "bench_optimizers.json")
    result.files = [str(f) for f in files]
    write_json_atomic(files[-1], result.to_json() | {"files": result.files})
    return result.files


# -- printing --------------------------------------------------------------------------------------
def _fmt(summary: tuple[float, float, float] | None, spec: str = ".3f") -> str:
    if summary is None:
        return "-"
    med, lo, hi = summary
    if not math.isfinite(med):
        return "never"
    hi_text = "never" if not math.isfinite(hi) else format(hi, spec)
    return f"{format(med, spec)} ({format(lo, spec)}-{hi_text})"


def print_report(result: BenchResult, console: Any = None) -> None:
    """Print one rich table per task, then the targets block."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 200)
    s = result.settings
    for task in s["tasks"]:
        rows = result.rows(task)
        if not rows:
            continue
        spe = rows[0]["steps_per_epoch"]
        sgd_rows = [m for m in rows if m["optimizer"] == "sgd"]
        e_star = statistics.median(m["final_train_error"] for m in sgd_rows if m["final_train_error"] is not None)
        table = Table(title=f"{task}: {len(s['seeds'])} seeds x {s['epochs']} epochs ({spe} steps/epoch); "
                            f"e* = SGD's final training error (median {e_star:.4f}); median (min-max) over seeds")
        for col in ("optimizer", "lr", "steps to e*", "ratio_budget", "ratio_first", "final train err",
                    "final test err", "min test err", "gap", "state bytes (xP)", "step ratio", "iter ratio"):
            table.add_column(col, justify="left" if col == "optimizer" else "right")
        for name in s["optimizers"]:
            mine = [m for m in rows if m["optimizer"] == name]
            if not mine:
                continue
            reached = sum(m["steps_to_target"] is not None for m in mine)
            steps = _fmt(result.summary(task, name, "steps_to_target"), ",.0f")
            if reached < len(mine):
                steps += f" [{reached}/{len(mine)}]"
            m0 = mine[0]
            state = f"{m0['state_bytes']:,} ({m0['state_multiple_of_p']:.0f}P)"
            if m0["generator_bytes"]:
                state += f" +{m0['generator_bytes']:,} gen"
            t = result.timing.get(task, {}).get(name)
            table.add_row(name, f"{m0['lr']:g}", steps, _fmt(result.summary(task, name, "ratio_budget"), ".2f"),
                          _fmt(result.summary(task, name, "ratio_first"), ".2f"),
                          _fmt(result.summary(task, name, "final_train_error"), ".4f"),
                          _fmt(result.summary(task, name, "final_test_error"), ".4f"),
                          _fmt(result.summary(task, name, "min_test_error"), ".4f"),
                          _fmt(result.summary(task, name, "gap"), ".4f"), state,
                          f"{t['step_ratio']:.2f}" if t else "-", f"{t['iteration_ratio']:.2f}" if t else "-")
        console.print(table)
    console.print("Equal lr gives fixed-momentum methods (beta 0.9) an effective step of 10x lr; "
                  "--lr-override NAME=LR compares at equal effective steps. Time ratios are against "
                  f"{REFERENCE} (median of interleaved rounds, thread time).")
    table = Table(title="targets (spec 05 §9)")
    for col in ("#", "target", "measured", "threshold", "verdict", "note"):
        table.add_column(col)
    for t in result.targets:
        measured = "-" if t.measured is None else f"{t.measured:.4g}"
        colour = {"MET": "green", "NOT MET": "red"}.get(t.verdict, "yellow")
        table.add_row(t.id, t.name, measured, t.threshold, f"[{colour}]{t.verdict}[/]", t.note)
    console.print(table)


class _Progress:
    """A rich progress bar over the benchmark's runs; silent unless enabled and on a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.total = total

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("bench", total=self.total)
        return self

    def describe(self, text: str) -> None:
        if self.enabled:
            self.bar.update(self.task, description=text)

    def advance(self) -> None:
        if self.enabled:
            self.bar.advance(self.task)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
