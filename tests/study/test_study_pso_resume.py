"""Check 6 (spec 02 §10): the swarm lives in the storage. A one-worker 60-trial PSO study over dicelab's catalog
space, stopped after 30 trials and resumed by a NEW PROCESS, stores exactly what an uninterrupted run stores:
positions, velocities, notes, parameters and values, bit for bit (journal file and SQLite). The study includes an
enqueued (non-swarm) trial, a FAIL and a -inf trial, so the index bookkeeping is exercised across the restart."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from _study_pso_support import RESUME_STUDY, run_resume_study, swarm_record
from optuna.trial import TrialState

from dicelab.study.storage import open_storage

HERE = Path(__file__).resolve().parent


@pytest.fixture
def fast_dir(tmp_path):
    """A folder on tmpfs where there is one: SQLite commits every parameter with an fsync, which costs ~15 ms
    on a disk and nothing in memory (the check is about what is stored, not about durability)."""
    try:
        path = Path(tempfile.mkdtemp(prefix="dicelab-pso-", dir="/dev/shm"))
    except OSError:
        yield tmp_path
        return
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_resumed_study_is_bit_identical(fast_dir):
    tmp_path = fast_dir
    reference = swarm_record(run_resume_study("memory:pso-resume-reference", 60))
    assert len(reference) == 60
    states = [row[1] for row in reference]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 59
    assert sum(1 for row in reference if row[2] == float("-inf")) == 1
    assert max(dict(row[4]).get("pso:t") or 0 for row in reference) == 7         # the swarm really moved

    urls = [f"journal:{tmp_path / 'study.journal'}", f"sqlite:///{tmp_path / 'study.db'}"]
    for url in urls:
        run_resume_study(url, 30)                                  # first half here ...
    done = subprocess.run([sys.executable, str(HERE / "_study_pso_support.py"), *urls, "60"],  # ... rest there
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for url in urls:
        study = optuna.load_study(study_name=RESUME_STUDY, storage=open_storage(url))
        assert len(study.trials) == 60 and study.trials[29].state != TrialState.RUNNING
        resumed = swarm_record(study)
        for want, got in zip(reference, resumed, strict=True):
            assert want == got, (url, want[0])
