"""Creating, running and resuming studies: the worker loop of spec 02 §4.

A study lives entirely in its Optuna storage: the validated study config (and its hash), the search space,
the budget, every trial and the PSO swarm. A worker needs only the storage URL and the study name; ``run``
is N local workers. The loop is: check the budget → ask → decode → train → write the trial record → tell.

* **Budget.** Right after ``ask`` a worker ranks its trial among the non-failed trials by number; a trial
  at or past ``n_trials`` is told FAIL (``surplus``) before any training. So the study ends with exactly
  ``n_trials`` finished (COMPLETE or PRUNED) trials, however many workers race for the last slots.
* **Liveness.** A running trial carries ``worker`` (host:pid) and a ``heartbeat`` refreshed by a background
  thread. Any worker fails RUNNING trials whose heartbeat is older than ``grace_s``, and at once those of a
  dead process on its own host (``stale: worker lost``); the slot re-opens for the budget.
* **Failures never stop the study.** An exception in a trial is a FAIL with ``"<Type>: <message>"``;
  ``max_consecutive_failures`` in a row stop that worker (not the study) with a one-line error.
* **Records first.** A trial is told only after ``<runs>/<study>/trials/<number>.json`` is on disk, and
  storage is append-only, so killing a worker at any moment loses at most its running trial.
"""

from __future__ import annotations

import importlib
import json
import math
import multiprocessing
import os
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from dicelab.errors import ConfigError, DicelabError
from dicelab.randomness.config import RandomnessConfig
from dicelab.study.config import StudyConfig, config_hash, first_difference
from dicelab.study.objective import TrialOutcome, evaluate_config
from dicelab.study.space import SearchSpace
from dicelab.study.storage import open_storage, storage_label
from dicelab.train.record import clean_floats, library_versions, utc_now, write_json_atomic

__all__ = ["create_study", "load_study", "make_pruner", "run_study", "run_worker", "run_workers", "WorkerReport", "study_status",
           "reap_stale", "trial_record_path"]

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONFIG_ATTR, HASH_ATTR, SPACE_ATTR, BUDGET_ATTR = ("dicelab:config", "dicelab:config_hash", "dicelab:space",
                                                   "dicelab:n_trials")
OBJECTIVE_ATTR = "dicelab:objective"


def _this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _storage(storage: str | optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    return open_storage(storage) if isinstance(storage, str) else storage


# -- creating and loading --------------------------------------------------------------------------------
def create_study(cfg: StudyConfig, storage: str | optuna.storages.BaseStorage | None = None, *,
                 n_trials: int | None = None, objective: str | None = None) -> optuna.Study:
    """Create the study of ``cfg`` (or re-open it: resuming), store its config, space and budget.

    Re-opening with a config whose hash differs from the stored one is a ``ConfigError`` naming the first
    differing field; nothing stored is changed. ``n_trials`` (default ``study.n_trials``) sets the budget,
    which a resumed study may raise. ``objective`` (``"module:function"``) replaces training by a function of
    ``(randomness_config, trial, study_config) -> float`` (synthetic studies, tests)."""
    store = _storage(storage if storage is not None else cfg.storage_url())
    study = optuna.create_study(study_name=cfg.study.name, storage=store, direction="maximize",
                                load_if_exists=True)
    attrs = study.user_attrs
    new_json = json.loads(cfg.to_json())
    if CONFIG_ATTR in attrs:
        if attrs.get(HASH_ATTR) != config_hash(new_json):
            diff = first_difference(json.loads(attrs[CONFIG_ATTR]), new_json) or "the search space"
            raise ConfigError(f"study {cfg.study.name!r} already exists in {storage_label(storage) if isinstance(storage, str) else 'this storage'} "
                              f"with a different config: {diff}; use another study name or the stored config")
        if attrs.get(OBJECTIVE_ATTR) != objective:
            raise ConfigError(f"study {cfg.study.name!r}: stored objective {attrs.get(OBJECTIVE_ATTR)!r} differs "
                              f"from {objective!r}")
    else:
        space = cfg.space()
        n_classes = 10
        if objective is None:
            from dicelab.train.engine import load_data_for

            n_classes = load_data_for(cfg.task).num_classes   # a missing dataset fails here, before any worker
        task = cfg.task
        study.set_user_attr(CONFIG_ATTR, cfg.to_json())
        study.set_user_attr(HASH_ATTR, config_hash(new_json))
        study.set_user_attr(SPACE_ATTR, space.to_json())
        study.set_user_attr("dicelab:task", f"{task.data.name} / {task.model.name}, {task.train.epochs} epochs")
        study.set_user_attr("dicelab:n_classes", n_classes)
        study.set_user_attr("dicelab:sampler", cfg.study.sampler)
        study.set_user_attr("dicelab:source", "run")
        study.set_user_attr("dicelab:seed", cfg.study.seed)
        study.set_user_attr("dicelab:created_at", utc_now())
        study.set_user_attr(OBJECTIVE_ATTR, objective)
    budget = int(n_trials if n_trials is not None else cfg.study.n_trials)
    if attrs.get(BUDGET_ATTR) != budget:
        study.set_user_attr(BUDGET_ATTR, budget)
    return study


def load_study(storage: str | optuna.storages.BaseStorage, study_name: str, *,
               with_sampler: bool = True) -> tuple[optuna.Study, StudyConfig, SearchSpace]:
    """The stored study with its config, space and (optionally) its configured sampler."""
    from dicelab.study.samplers import make_sampler

    store = _storage(storage)
    try:
        probe = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(store)) or "none"
        raise ConfigError(f"no study {study_name!r} in this storage (studies: {names})") from None
    attrs = probe.user_attrs
    if CONFIG_ATTR not in attrs:
        raise ConfigError(f"study {study_name!r} was not created by `dicelab study run` (no stored config)")
    cfg = StudyConfig.model_validate_json(attrs[CONFIG_ATTR])
    space = SearchSpace.from_json(attrs[SPACE_ATTR])
    if not with_sampler:
        return probe, cfg, space
    sampler = make_sampler(cfg.study.sampler, space, seed=cfg.study.seed,
                           pso_options=cfg.study.pso.model_dump(), n_trials=attrs.get(BUDGET_ATTR))
    return optuna.load_study(study_name=study_name, storage=store, sampler=sampler,
                             pruner=make_pruner(cfg)), cfg, space


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """``fitness.pruner``: median and hyperband see validation accuracy per epoch (first seed); wilcoxon
    compares a trial's per-seed values with the best trial's on the same (common) seeds."""
    name = cfg.fitness.pruner
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.task.train.epochs)
    if name == "wilcoxon":
        with warnings.catch_warnings():      # "experimental" in Optuna 5: the user chose it by name
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    return optuna.pruners.NopPruner()


def trial_record_path(cfg: StudyConfig, number: int) -> Path:
    return cfg.study_dir() / "trials" / f"{number}.json"


# -- liveness ------------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail(study: optuna.Study, trial: optuna.trial.FrozenTrial, status: str, reason: str) -> bool:
    """Mark a RUNNING trial FAIL with a status and reason; False if someone finished it first."""
    storage, tid = study._storage, trial._trial_id
    try:
        storage.set_trial_user_attr(tid, "status", status)
        storage.set_trial_user_attr(tid, "reason", reason)
        storage.set_trial_state_values(tid, TrialState.FAIL)
    except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False
    return True


def reap_stale(study: optuna.Study, grace_s: float, *, now: float | None = None) -> list[int]:
    """Fail RUNNING trials whose worker is gone: a dead pid on this host, or a heartbeat older than grace_s."""
    now = time.time() if now is None else now
    host = socket.gethostname()
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        beat = t.user_attrs.get("heartbeat")
        reason = None
        if worker:
            w_host, _, w_pid = worker.rpartition(":")
            if w_host == host and w_pid.isdigit() and int(w_pid) != os.getpid() and not _pid_alive(int(w_pid)):
                reason = f"stale: worker lost ({worker} is no longer running)"
        last = beat if beat is not None else (t.datetime_start.timestamp() if t.datetime_start else None)
        if reason is None and last is not None and now - last > grace_s:
            reason = f"stale: worker lost ({worker or 'unknown worker'}, no heartbeat for {now - last:.0f} s)"
        if reason is not None and _fail(study, t, "stale", reason):
            reaped.append(t.number)
    return reaped


class _Heartbeat:
    """Refreshes a running trial's ``heartbeat`` user attr from a background thread."""

    def __init__(self, study: optuna.Study, trial_id: int, every_s: float) -> None:
        self.study, self.trial_id, self.every_s = study, trial_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dicelab-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.study._storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())
            except Exception:          # the trial was finished (or reaped) meanwhile: nothing left to do
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# -- the worker loop -----------------------------------------------------------------------------------
@dataclass
class WorkerReport:
    worker: str
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    surplus: int = 0
    stopped: str = ""
    trials: list[int] = field(default_factory=list)


def _finished(trials) -> int:
    return sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))


def _objective_fn(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"objective {path!r} cannot be imported ({exc})") from None


def _write_record(cfg: StudyConfig, trial: optuna.Trial, randomness: RandomnessConfig | None,
                  outcome: TrialOutcome | None, status: str, reason: str | None, started: float,
                  error: str | None = None) -> Path:
    path = trial_record_path(cfg, trial.number)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "dicelab_trial": 1, "study": cfg.study.name, "number": trial.number, "status": status, "reason": reason,
        "params": trial.params, "randomness": randomness.flat() if randomness is not None else None,
        "value": outcome.value if outcome else None, "values": outcome.values if outcome else [],
        "test_accuracy": outcome.test_accuracy if outcome else None,
        "worker": _this_worker(), "duration_s": time.perf_counter() - started, "finished_at": utc_now(),
        "runs": outcome.records if outcome else [], "traceback": error, "versions": library_versions(),
    }
    write_json_atomic(path, clean_floats(payload))
    return path


def _tell(study: optuna.Study, trial: optuna.Trial, **kwargs) -> bool:
    try:
        study.tell(trial, **kwargs)
    except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
        return False      # reaped as stale meanwhile (the worker stalled past grace_s): keep the FAIL
    return True


def run_worker(storage: str | optuna.storages.BaseStorage, study_name: str, *, max_trials: int | None = None,
               timeout_s: float | None = None, on_trial: Callable[[WorkerReport], None] | None = None,
               train_fn: Callable[..., dict[str, Any]] | None = None) -> WorkerReport:
    """One worker: loop over ask → train → tell until the budget is spent (or the swarm stops)."""
    study, cfg, space = load_study(storage, study_name)
    attrs = study.user_attrs
    objective = _objective_fn(attrs[OBJECTIVE_ATTR]) if attrs.get(OBJECTIVE_ATTR) else None
    data = None
    if objective is None and train_fn is None:
        from dicelab.train.engine import load_data_for

        data = load_data_for(cfg.task)          # once per worker; every trial trains on the same split
    me = _this_worker()
    report = WorkerReport(worker=me)
    limit = timeout_s if timeout_s is not None else cfg.study.timeout_s   # per worker: no trial starts after it
    deadline = None if limit is None else time.monotonic() + limit
    consecutive = 0
    reap_stale(study, cfg.study.grace_s)
    while True:
        budget = int(study.user_attrs[BUDGET_ATTR])
        trials = study.get_trials(deepcopy=False)
        if _finished(trials) >= budget:
            report.stopped = "budget"
            break
        if deadline is not None and time.monotonic() >= deadline:
            report.stopped = "timeout"
            break
        if max_trials is not None and len(report.trials) >= max_trials:
            report.stopped = "max_trials"
            break
        should_stop = getattr(study.sampler, "should_stop", None)
        if should_stop is not None and should_stop(study):
            report.stopped = "sampler"
            break
        reap_stale(study, cfg.study.grace_s)
        trial = study.ask()
        storage_, tid = study._storage, trial._trial_id
        # Rank among non-failed trials: ranked at or past the budget means another worker holds the last slot.
        ahead = sum(1 for t in study.get_trials(deepcopy=False)
                    if t.number < trial.number and t.state != TrialState.FAIL)
        if ahead >= budget:
            storage_.set_trial_user_attr(tid, "status", "surplus")
            storage_.set_trial_user_attr(tid, "reason", f"surplus: {ahead} trials ahead of a budget of {budget}")
            _tell(study, trial, state=TrialState.FAIL)
            report.surplus += 1
            report.stopped = "budget"
            break
        storage_.set_trial_user_attr(tid, "worker", me)
        storage_.set_trial_user_attr(tid, "heartbeat", time.time())
        report.trials.append(trial.number)
        started = time.perf_counter()
        randomness, epochs = None, None
        with _Heartbeat(study, tid, cfg.study.heartbeat_s):
            try:
                randomness = space.suggest(trial)
                prescreen = bool(study._storage.get_trial_system_attrs(tid).get("pso:prescreen"))
                epochs = cfg.fitness.prescreen_epochs if prescreen else None
                if objective is not None:
                    result = objective(randomness, trial, cfg)
                    outcome = result if isinstance(result, TrialOutcome) else TrialOutcome(
                        value=float(result), status="ok", reason=None, values=[float(result)],
                        test_accuracies=[None], duration_s=time.perf_counter() - started)
                else:
                    outcome = evaluate_config(cfg, randomness, trial_number=trial.number, data=data, trial=trial,
                                              epochs=epochs, train_fn=train_fn)
            except Exception as exc:            # any failure inside a trial: record it, go on
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                _write_record(cfg, trial, randomness, None, "error", reason, started, traceback.format_exc())
                storage_.set_trial_user_attr(tid, "status", "error")
                storage_.set_trial_user_attr(tid, "reason", reason)
                _tell(study, trial, state=TrialState.FAIL)
                report.failed += 1
                consecutive += 1
                _retry(study, trial, cfg)
                if on_trial:
                    on_trial(report)
                if consecutive >= cfg.study.max_consecutive_failures:
                    raise DicelabError(f"worker {me} stopped after {consecutive} failed trials in a row; "
                                       f"last: {reason}") from None
                continue
        consecutive = 0
        record = _write_record(cfg, trial, randomness, outcome, outcome.status, outcome.reason, started)
        for key, value in (("status", outcome.status), ("reason", outcome.reason),
                           ("test_accuracy", outcome.test_accuracy), ("value_seeds", outcome.values),
                           ("test_accuracy_seeds", outcome.test_accuracies),
                           ("duration_s", round(outcome.duration_s, 4)),
                           ("epochs", epochs or cfg.task.train.epochs), ("record", str(record))):
            storage_.set_trial_user_attr(tid, key, value)
        if outcome.status == "pruned":
            if _tell(study, trial, state=TrialState.PRUNED):
                report.pruned += 1
        elif _tell(study, trial, values=outcome.value):
            report.completed += 1
        if on_trial:
            on_trial(report)
    return report


def _retry(study: optuna.Study, trial: optuna.Trial, cfg: StudyConfig) -> None:
    """Re-enqueue a failed trial's parameters (a non-swarm trial) up to ``study.retry_failed`` times."""
    if cfg.study.retry_failed <= 0:
        return
    root = trial.user_attrs.get("retry_of", trial.number)
    done = sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("retry_of") == root)
    if done < cfg.study.retry_failed:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": root}, skip_if_exists=False)


# -- N local workers ----------------------------------------------------------------------------------
def _worker_process(storage_url: str, study_name: str, threads: int, timeout_s: float | None,
                    max_trials: int | None = None) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        run_worker(storage_url, study_name, timeout_s=timeout_s, max_trials=max_trials)
    except DicelabError as exc:
        print(f"error: {exc}", flush=True)
        raise SystemExit(exc.exit_code) from None


def run_workers(storage_url: str, study_name: str, *, workers: int = 1, timeout_s: float | None = None,
                max_trials: int | None = None, refresh: Callable[[], None] = lambda: None) -> WorkerReport:
    """Run ``workers`` workers of a stored study on this machine and wait for them all.

    One worker runs in this process: it starts at once (torch is already imported) while the others, spawned
    processes, import theirs, which is most of a short study's start-up time. Each worker gets
    ``cores // workers`` threads and at most ``max_trials`` trials. ``refresh`` is called as trials finish
    (a progress display). Returns this process's worker report; a failed worker is an error only if the
    budget was not reached."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_process, args=(storage_url, study_name, threads, timeout_s, max_trials),
                         name=f"dicelab-worker-{i}") for i in range(1, workers)]
    import torch

    own_threads = torch.get_num_threads()
    error: DicelabError | None = None
    report = WorkerReport(worker=_this_worker())
    for p in procs:
        p.start()
    if procs:
        torch.set_num_threads(threads)
    try:
        report = run_worker(storage_url, study_name, timeout_s=timeout_s, max_trials=max_trials,
                            on_trial=lambda _r: refresh())
    except DicelabError as exc:          # this worker gave up; the others go on
        if not procs:
            raise
        error = exc
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    finally:
        torch.set_num_threads(own_threads)
        try:
            while any(p.is_alive() for p in procs):
                refresh()
                time.sleep(0.5)
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        finally:
            for p in procs:
                p.join()
    refresh()
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)] + ([1] if error is not None else [])
    if bad:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
        budget = int(study.user_attrs[BUDGET_ATTR])
        finished = _finished(study.get_trials(deepcopy=False))
        if finished < budget:
            raise DicelabError(f"study {study_name!r}: {len(bad)} of {workers} workers stopped with an error "
                               f"(exit codes {bad}); finished {finished} of {budget}"
                               + (f"; here: {error}" if error is not None else ""))
    return report


def run_study(cfg: StudyConfig, storage: str | None = None, *, workers: int = 1, n_trials: int | None = None,
              timeout_s: float | None = None, quiet: bool = False, objective: str | None = None) -> optuna.Study:
    """Create (or resume) ``cfg``'s study and run ``workers`` local workers (:func:`run_workers`) until its
    budget is spent. The same command resumes an interrupted study."""
    url = storage or cfg.storage_url()
    if not isinstance(url, str):
        raise ConfigError("run_study needs a storage URL (workers open their own connection)")
    study = create_study(cfg, url, n_trials=n_trials, objective=objective)
    budget = int(study.user_attrs[BUDGET_ATTR])
    timeout = timeout_s if timeout_s is not None else cfg.study.timeout_s
    with _Progress(study, budget, quiet, cfg.study.name) as progress:
        run_workers(url, cfg.study.name, workers=workers, timeout_s=timeout, refresh=progress.refresh)
    return study


class _Progress:
    """One progress bar for the whole study: finished / budget, best value, failures."""

    def __init__(self, study: optuna.Study, budget: int, quiet: bool, name: str) -> None:
        self.study, self.budget, self.quiet, self.name = study, budget, quiet, name
        self._bar = None

    def __enter__(self) -> _Progress:
        if not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(f"study {self.name}", total=self.budget, info="")
            self.refresh()
        return self

    def refresh(self) -> None:
        if self._bar is None:
            return
        trials = self.study.get_trials(deepcopy=False)
        done = _finished(trials)
        values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None
                  and math.isfinite(t.value)]
        fails = sum(1 for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("status") != "surplus")
        best = f"best {max(values):.4f}" if values else "best -"
        self._bar.update(self._task, completed=done, info=f"{best}  failed {fails}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


# -- status ----------------------------------------------------------------------------------------------
def study_status(storage: str | optuna.storages.BaseStorage, study_name: str | None = None) -> list[dict[str, Any]]:
    """Per study: counts by state and status, the best trial, running trials with their worker and age."""
    store = _storage(storage)
    names = [study_name] if study_name else [s.study_name for s in optuna.get_all_study_summaries(store)]
    out = []
    now = time.time()
    for name in names:
        try:
            study = optuna.load_study(study_name=name, storage=store)
        except KeyError:
            raise ConfigError(f"no study {name!r} in this storage") from None
        trials = study.get_trials(deepcopy=False)
        by_state: dict[str, int] = {}
        by_status: dict[str, int] = {}
        for t in trials:
            by_state[t.state.name] = by_state.get(t.state.name, 0) + 1
            s = t.user_attrs.get("status")
            if s:
                by_status[s] = by_status.get(s, 0) + 1
        finite = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
        best = max(finite, key=lambda t: t.value) if finite else None
        running = [{"number": t.number, "worker": t.user_attrs.get("worker"),
                    "age_s": round(now - t.datetime_start.timestamp(), 1) if t.datetime_start else None,
                    "heartbeat_age_s": round(now - t.user_attrs["heartbeat"], 1) if "heartbeat" in t.user_attrs else None}
                   for t in trials if t.state == TrialState.RUNNING]
        out.append({"study": name, "budget": study.user_attrs.get(BUDGET_ATTR), "trials": len(trials),
                    "finished": _finished(trials), "by_state": by_state, "by_status": by_status,
                    "best": None if best is None else {"number": best.number, "value": best.value,
                                                       "params": best.params},
                    "running": running})
    return out
