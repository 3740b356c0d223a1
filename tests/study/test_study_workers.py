"""Workers sharing one study (spec 02 §4, checks 7 and 8 of §10).

* Check 7: two worker processes (``run_study(workers=2)``) on one journal file, SQLite file or PostgreSQL
  database run a 40-trial PSO study (8 particles) of a 0.05 s synthetic objective: exactly 40 COMPLETE trials,
  no (p, t) twice, every particle's iterations contiguous from 0 (surplus trials included), and every value a
  worker computed is stored, COMPLETE, with that value (no lost tell, no trial evaluated twice).
* Check 8: a worker process is SIGKILLed while its trial sleeps; trials finished before the kill keep their
  values, the killed trial becomes FAIL ``stale: ...``, and a restarted worker finishes the budget exactly.
* The budget (surplus) rule, failures inside trials, ``max_consecutive_failures``, and the grace period.

The objectives live in ``_study_workers_support.py`` (importable by spawned workers: they inherit sys.path).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from _study_workers_support import read_logs
from optuna.trial import TrialState

from dicelab.errors import DicelabError
from dicelab.study import runner
from dicelab.study.config import load_study_config
from dicelab.study.runner import create_study, load_study, reap_stale, run_study, run_worker
from dicelab.study.storage import open_storage

HERE = Path(__file__).resolve().parent
SUPPORT = "_study_workers_support"
optuna.logging.set_verbosity(optuna.logging.WARNING)


# A small space with every coordinate kind (categorical, log, int, log with an off band, linear): fewer
# parameters mean fewer storage writes per trial, which is what a trial costs on SQLite (~10-20 ms a write).
TECHNIQUES = ["optimizer", "lr", "batch_size", "input_noise", "dropout", "weight_noise"]


def _cfg(tmp_path: Path, name: str, n_trials: int, *, particles: int = 8, **study):
    return load_study_config(data={
        "study": {"name": name, "n_trials": n_trials, "seed": 3, "runs_dir": str(tmp_path / "runs"),
                  "pso": {"n_particles": particles, "sparse_k": 2}, **study},
        "search": {"techniques": TECHNIQUES}})


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials read through a fresh storage handle (nothing cached from the workers' side)."""
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)


def _assert_swarm_slots(trials, particles: int) -> None:
    """No (p, t) twice; each particle's iterations 0, 1, 2, ... without a gap; p = n mod P, t = n div P."""
    pairs = [(t.system_attrs["pso:p"], t.system_attrs["pso:t"]) for t in trials]
    assert len(set(pairs)) == len(pairs)
    for p in range(particles):
        its = sorted(it for q, it in pairs if q == p)
        assert its == list(range(len(its))), (p, its)
    assert all((t.number % particles, t.number // particles) == pair for t, pair in zip(trials, pairs, strict=True))


def _start_workers(*studies: tuple[str, str]) -> subprocess.Popen:
    """A worker process serving each (url, study name) in its own thread (see _study_workers_support.main)."""
    args = [a for pair in studies for a in pair]
    return subprocess.Popen([sys.executable, str(HERE / f"{SUPPORT}.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# -- check 7 -------------------------------------------------------------------------------------------
def _assert_two_workers_shared_one_swarm(url: str, cfg) -> None:
    trials = _trials(url, cfg.study.name)
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    assert [t.number for t in by_state[TrialState.COMPLETE]] == list(range(40))
    assert not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING] and not by_state[TrialState.PRUNED]
    # the only failures are surplus trials: a worker that asked while the other held the last slot
    assert all(t.user_attrs.get("status") == "surplus" for t in by_state[TrialState.FAIL])
    assert len(by_state[TrialState.FAIL]) <= 2
    assert [t.number for t in trials] == list(range(len(trials)))
    _assert_swarm_slots(trials, 8)                                   # surplus trials included
    assert max(t.system_attrs["pso:t"] for t in by_state[TrialState.COMPLETE]) == 4

    # No lost tell: every value a worker computed is stored, COMPLETE, with exactly that value, and nothing
    # was evaluated twice or stored without being evaluated.
    stored = {t.number: t for t in by_state[TrialState.COMPLETE]}
    events = read_logs(cfg)
    assert sorted(e["number"] for e in events) == sorted(stored)
    for e in events:
        assert stored[e["number"]].value == e["value"]
        assert stored[e["number"]].user_attrs["worker"] == f"{socket.gethostname()}:{e['pid']}"
        record = json.loads(Path(stored[e["number"]].user_attrs["record"]).read_text())
        assert record["value"] == e["value"] and record["status"] == "ok"
    pids = {e["pid"] for e in events}
    assert len(pids) == 2        # two worker processes took part (run_study runs one of them in its own process)


@pytest.fixture(scope="module")
def two_worker_runs(tmp_path_factory, request):
    """The three studies of check 7, run at the same time: the journal one by ``run_study(workers=2)`` (a worker
    in this process and a spawned one), the SQLite and PostgreSQL ones by one pair of worker processes that
    serve both (one thread per study): three process starts instead of six, each of which imports torch."""
    tmp = tmp_path_factory.mktemp("two-workers")
    runs = {"sqlite": (f"sqlite:///{tmp / 'study.db'}", _cfg(tmp, "two-sqlite", 40))}
    skipped = None
    try:
        runs["postgresql"] = (request.getfixturevalue("postgres_server").create_database(),
                              _cfg(tmp, "two-postgresql", 40))
    except pytest.skip.Exception as exc:
        skipped = str(exc)
    for url, cfg in runs.values():
        create_study(cfg, url, objective=f"{SUPPORT}:sphere_sleep")
    procs = [_start_workers(*((url, cfg.study.name) for url, cfg in runs.values())) for _ in range(2)]
    try:
        runs["journal"] = (f"journal:{tmp / 'study.journal'}", _cfg(tmp, "two-journal", 40))
        run_study(runs["journal"][1], runs["journal"][0], workers=2, quiet=True, objective=f"{SUPPORT}:sphere_sleep")
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        reports = json.loads(out.strip().splitlines()[-1])
        assert not any("error" in r for r in reports.values()), reports
    return runs, skipped


@pytest.mark.parametrize("kind", ["journal", "sqlite", "postgresql"])
def test_two_worker_processes_share_one_swarm(kind, two_worker_runs):
    runs, skipped = two_worker_runs
    if kind not in runs:
        pytest.skip(skipped)
    _assert_two_workers_shared_one_swarm(*runs[kind])


# -- check 8 -------------------------------------------------------------------------------------------
def test_killed_worker_goes_stale_and_a_restarted_worker_finishes(tmp_path, monkeypatch):
    """Journal and SQLite at once: one worker process serves both studies (a thread each) and is killed
    while both studies' trial 6 sleep."""
    kill_at = 6
    studies = {}
    for kind, url in (("journal", f"journal:{tmp_path / 'study.journal'}"),
                      ("sqlite", f"sqlite:///{tmp_path / 'study.db'}")):
        cfg = _cfg(tmp_path, f"kill-{kind}", 10, particles=4, heartbeat_s=0.2, grace_s=2)
        create_study(cfg, url, objective=f"{SUPPORT}:sleep_on_signal")
        cfg.study_dir().mkdir(parents=True, exist_ok=True)
        (cfg.study_dir() / "kill_at").write_text(str(kill_at))
        studies[kind] = (url, cfg)
    proc = _start_workers(*((url, cfg.study.name) for url, cfg in studies.values()))
    try:
        deadline = time.monotonic() + 120
        while not all((cfg.study_dir() / "sleeping").exists() for _, cfg in studies.values()):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the worker never reached the trial to kill"
            time.sleep(0.05)
        time.sleep(0.6)                                  # a few heartbeats while the trials sleep
        before = {kind: {t.number: t.value for t in _trials(url, cfg.study.name) if t.state == TrialState.COMPLETE}
                  for kind, (url, cfg) in studies.items()}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    for kind, (url, cfg) in studies.items():
        assert sorted(before[kind]) == list(range(kill_at)), kind
        study, _, _ = load_study(url, cfg.study.name, with_sampler=False)
        killed = study.trials[kill_at]
        assert killed.state == TrialState.RUNNING
        assert killed.user_attrs["worker"] == f"{socket.gethostname()}:{proc.pid}"
        beat = killed.user_attrs["heartbeat"]
        assert beat - killed.datetime_start.timestamp() >= 0.2      # the heartbeat thread ran during the sleep
        # Seen from another machine (the pid cannot be checked there), the trial is stale only after grace_s.
        monkeypatch.setattr(runner.socket, "gethostname", lambda: "another-host")
        assert reap_stale(study, cfg.study.grace_s, now=beat + 1.5) == []
        assert study.trials[kill_at].state == TrialState.RUNNING
        monkeypatch.undo()

        report = run_worker(url, cfg.study.name)          # the restart: same host, so the dead pid is seen
        trials = _trials(url, cfg.study.name)
        killed = trials[kill_at]
        assert killed.state == TrialState.FAIL and killed.user_attrs["status"] == "stale"
        assert killed.user_attrs["reason"].startswith("stale")
        assert {t.number: t.value for t in trials if t.number in before[kind]} == before[kind]
        assert all(trials[n].state == TrialState.COMPLETE for n in before[kind])
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 10 and len(trials) == 11
        assert report.completed == 4 and report.stopped == "budget" and report.surplus == 0
        _assert_swarm_slots(trials, 4)
        # the particle of the killed trial moved on from the position stored on it
        assert trials[kill_at + 4].system_attrs["pso:note"] == "move"


def test_stale_after_grace_or_dead_pid(tmp_path):
    url = f"journal:{tmp_path / 'study.journal'}"
    cfg = _cfg(tmp_path, "stale", 5, particles=2, grace_s=2)
    create_study(cfg, url, objective=f"{SUPPORT}:quick")
    study, _, _ = load_study(url, cfg.study.name)
    remote, dead, alive = study.ask(), study.ask(), study.ask()
    t0 = time.time()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    for trial, worker in ((remote, "elsewhere:4242"), (dead, f"{host}:{int(gone.stdout)}"),
                          (alive, f"{host}:{os.getppid()}")):
        study._storage.set_trial_user_attr(trial._trial_id, "worker", worker)
        study._storage.set_trial_user_attr(trial._trial_id, "heartbeat", t0)
    assert reap_stale(study, 2.0, now=t0 + 1.9) == [dead.number]          # a dead local pid: at once
    assert reap_stale(study, 2.0, now=t0 + 2.1) == [remote.number, alive.number]   # no heartbeat past grace_s
    frozen = study.get_trials(deepcopy=False)
    assert all(frozen[t.number].state == TrialState.FAIL for t in (remote, dead, alive))
    assert frozen[dead.number].user_attrs["reason"].startswith("stale: worker lost")
    assert "no longer running" in frozen[dead.number].user_attrs["reason"]
    assert frozen[remote.number].user_attrs["reason"] == "stale: worker lost (elsewhere:4242, no heartbeat for 2 s)"
    # the reaped slots re-open: a worker still finishes the budget exactly
    report = run_worker(url, cfg.study.name)
    assert report.completed == 5
    assert sum(t.state == TrialState.COMPLETE for t in _trials(url, cfg.study.name)) == 5


# -- budget, failures ------------------------------------------------------------------------------------
def test_surplus_trial_is_failed_before_it_runs(tmp_path):
    url = f"journal:{tmp_path / 'study.journal'}"
    cfg = _cfg(tmp_path, "surplus", 3, particles=2)
    create_study(cfg, url, objective=f"{SUPPORT}:quick")
    other, _, _ = load_study(url, cfg.study.name)
    held = [other.ask() for _ in range(3)]           # another worker holds every slot of the budget

    report = run_worker(url, cfg.study.name)
    assert (report.completed, report.surplus, report.stopped, report.trials) == (0, 1, "budget", [])
    surplus = _trials(url, cfg.study.name)[3]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs["status"] == "surplus"
    assert surplus.user_attrs["reason"].startswith("surplus")
    assert not (cfg.study_dir() / "trials" / "3.json").exists()      # nothing was trained

    other.tell(held[0], state=TrialState.FAIL)      # a failed trial frees its slot ...
    other.tell(held[1], 0.5)
    report = run_worker(url, cfg.study.name)        # ... so this worker gets one trial, then a surplus one
    assert (report.completed, report.surplus) == (1, 1)
    other.tell(held[2], 0.25)
    trials = _trials(url, cfg.study.name)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert [t.user_attrs.get("status") for t in trials if t.state == TrialState.FAIL].count("surplus") == 2
    assert run_worker(url, cfg.study.name).stopped == "budget"     # a full study asks nothing more
    assert len(_trials(url, cfg.study.name)) == len(trials)


def test_failed_trials_are_recorded_and_the_study_reaches_its_budget(tmp_path):
    url = f"journal:{tmp_path / 'study.journal'}"
    cfg = _cfg(tmp_path, "failures", 6, particles=2)
    create_study(cfg, url, objective=f"{SUPPORT}:fail_some")
    cfg.study_dir().mkdir(parents=True, exist_ok=True)
    (cfg.study_dir() / "fail_at").write_text("1 3")
    report = run_worker(url, cfg.study.name)
    assert (report.completed, report.failed) == (6, 2)
    trials = _trials(url, cfg.study.name)
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 6 and len(trials) == 8
    for n in (1, 3):
        assert trials[n].state == TrialState.FAIL and trials[n].user_attrs["status"] == "error"
        assert trials[n].user_attrs["reason"] == f"RuntimeError: injected fault in trial {n}"
        record = json.loads((cfg.study_dir() / "trials" / f"{n}.json").read_text())
        assert record["status"] == "error" and "RuntimeError: injected fault" in record["traceback"]
    _assert_swarm_slots(trials, 2)                   # failed trials keep their swarm slot


def test_consecutive_failures_stop_the_worker_with_one_line(tmp_path):
    url = f"journal:{tmp_path / 'study.journal'}"
    cfg = _cfg(tmp_path, "broken", 5, particles=2, max_consecutive_failures=3)
    create_study(cfg, url, objective=f"{SUPPORT}:always_fail")
    with pytest.raises(DicelabError) as info:
        run_worker(url, cfg.study.name)
    message = str(info.value)
    assert "\n" not in message
    assert "stopped after 3 failed trials in a row" in message
    assert message.endswith("last: FileNotFoundError: dataset file missing for trial 2")
    trials = _trials(url, cfg.study.name)
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
