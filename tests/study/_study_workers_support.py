"""Synthetic objectives for the worker tests (checks 7 and 8 of spec 02 §10).

The runner imports ``"<module>:<function>"`` in every worker process; spawned children inherit ``sys.path``,
so this module (in tests/study, on the path under pytest) works as objective module. Each objective has the
runner's signature ``fn(randomness_config, trial, study_cfg) -> float`` and keeps its side files under
``study_cfg.study_dir()`` (the test's tmp dir), so tests never share state.

Also a script: ``python _study_workers_support.py URL STUDY [URL STUDY ...]`` runs one worker (``run_worker``)
per study, each in a thread, and prints the reports as JSON, so a test can start, kill and restart workers as
real processes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SLEEP_S = 0.05           # the synthetic "training" time of one trial (check 7)
BARRIER_TIMEOUT_S = 60.0
KILL_SLEEP_S = 120.0     # the trial that a test kills sleeps this long (it is killed long before)


def sphere_value(trial) -> float:
    """Minus the squared distance of the trial's coordinates (scaled to [0, 1]) from 0.3: a smooth maximum."""
    space = _space_of(trial)
    u = space.coordinates(trial.params)
    scaled = (u - space.low) / (space.high - space.low)
    return float(-np.sum((scaled - 0.3) ** 2))


_SPACES: dict[str, object] = {}


def _space_of(trial):
    from dicelab.study.space import SearchSpace

    text = trial.study.user_attrs["dicelab:space"]
    if text not in _SPACES:
        _SPACES[text] = SearchSpace.from_json(text)
    return _SPACES[text]


def _log(study_cfg, event: dict) -> None:
    """Append one JSON line to this process's log (one file per process: no interleaving)."""
    folder = study_cfg.study_dir() / "worker-log"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{os.getpid()}.jsonl", "a") as fh:
        fh.write(json.dumps(event) + "\n")


def read_logs(study_cfg) -> list[dict]:
    """Every event logged by every worker process of this study."""
    folder = study_cfg.study_dir() / "worker-log"
    events = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        events += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return events


def _barrier(study_cfg, parties: int) -> None:
    """Wait (once per process) until ``parties`` worker processes have reached their first trial."""
    folder = study_cfg.study_dir() / "barrier"
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / str(os.getpid())
    if mine.exists():
        return
    mine.touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(folder.iterdir())) < parties and time.monotonic() < deadline:
        time.sleep(0.02)


def sphere_sleep(randomness, trial, study_cfg) -> float:
    """Check 7: two workers meet at a barrier, then each trial sleeps 0.05 s and returns the sphere value.

    Every value is logged with its trial number and pid *before* the runner tells it: a told value that is
    missing from the storage is a lost trial."""
    _barrier(study_cfg, 2)
    time.sleep(SLEEP_S)
    value = sphere_value(trial)
    _log(study_cfg, {"number": trial.number, "value": value, "pid": os.getpid()})
    return value


def sleep_on_signal(randomness, trial, study_cfg) -> float:
    """Check 8: trial number ``KILL_AT`` (file ``kill_at`` in the study dir) writes ``sleeping`` and sleeps
    long, so the test can SIGKILL its worker mid-trial; every other trial is a short sphere evaluation."""
    folder = study_cfg.study_dir()
    kill_at = int((folder / "kill_at").read_text())
    if trial.number == kill_at:
        (folder / "sleeping").write_text(f"{trial.number} {os.getpid()}")
        time.sleep(KILL_SLEEP_S)
    time.sleep(0.01)
    value = sphere_value(trial)
    _log(study_cfg, {"number": trial.number, "value": value, "pid": os.getpid()})
    return value


def quick(randomness, trial, study_cfg) -> float:
    """The sphere value, at once."""
    return sphere_value(trial)


def fail_some(randomness, trial, study_cfg) -> float:
    """Trials whose number is listed in the file ``fail_at`` raise ``RuntimeError``; the rest succeed."""
    fail_at = {int(n) for n in (study_cfg.study_dir() / "fail_at").read_text().split()}
    if trial.number in fail_at:
        raise RuntimeError(f"injected fault in trial {trial.number}\nsecond line of the message")
    return sphere_value(trial)


def always_fail(randomness, trial, study_cfg) -> float:
    raise FileNotFoundError(f"dataset file missing for trial {trial.number}")


def main(argv: list[str]) -> None:
    """Run one worker per (URL, STUDY) pair, each in its own thread, and print their reports as one JSON line.

    Threads let one process serve several studies at once (one process start instead of several: each start
    imports torch); every study still sees a separate worker loop."""
    import threading

    from dicelab.study.runner import run_worker

    results: dict[str, dict] = {}

    def work(url: str, name: str) -> None:
        try:
            r = run_worker(url, name)
            results[name] = {"worker": r.worker, "completed": r.completed, "failed": r.failed,
                             "surplus": r.surplus, "stopped": r.stopped, "trials": r.trials}
        except Exception as exc:       # reported to the test, which fails with it
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}

    threads = [threading.Thread(target=work, args=pair) for pair in zip(argv[0::2], argv[1::2], strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":   # python _study_workers_support.py URL STUDY [URL STUDY ...]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1:])
