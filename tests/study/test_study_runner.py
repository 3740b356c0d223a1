"""The study runner on a real (tiny) digits task: failures, divergence, resume, records (spec 02 §4–5, check 9)."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.trial import TrialState

from dicelab.errors import ConfigError
from dicelab.study import runner as runner_mod
from dicelab.study.config import load_study_config
from dicelab.study.runner import create_study, load_study, run_study, study_status

# A 3-epoch digits MLP: about 0.1 s a trial on one thread.
TASK = {"dataset": "digits", "model": {"name": "mlp", "widths": [32]},
        "train": {"epochs": 3, "threads": 1}}


def _config(tmp_path, name="t", **study):
    return load_study_config(data={
        "study": {"name": name, "sampler": "pso", "n_trials": 12, "seed": 0, "runs_dir": str(tmp_path / "runs"),
                  "pso": {"n_particles": 4}, **study},
        "task": TASK, "search": {"bounds": {"batch_size": [32, 128]}}})


def test_diverged_and_failed_trials_are_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    """Check 9: an enqueued lr = 1e6 trial diverges (COMPLETE, -inf, status diverged), an injected fault is a
    FAIL with the exception text, the study still ends with 12 finished trials, and -inf is never gbest."""
    cfg = _config(tmp_path)
    url = f"journal:{tmp_path / 'study.journal'}"
    study = create_study(cfg, url)
    space = cfg.space()
    params = space.params(space.encode(space.decode(space.sample_sparse(__import__("numpy").random.default_rng(0), 0))))
    params.update({"lr:log10": 6.0, "optimizer": "sgd"})
    study.enqueue_trial(params)

    real = runner_mod.evaluate_config

    def faulty(cfg_, randomness, *, trial_number, **kw):
        if trial_number == 3:
            raise RuntimeError("injected fault in trial 3")
        return real(cfg_, randomness, trial_number=trial_number, **kw)

    monkeypatch.setattr(runner_mod, "evaluate_config", faulty)
    run_study(cfg, url, quiet=True)

    study, _, _ = load_study(url, "t")
    trials = study.get_trials()
    first = trials[0]
    assert first.state == TrialState.COMPLETE and first.value == -math.inf
    assert first.user_attrs["status"] == "diverged"
    # the engine calls a loss above train.diverge_threshold (1e4; cross-entropy starts at ln 10) or a
    # non-finite one diverged, and says which and where
    assert first.user_attrs["reason"].startswith(("training loss above", "non-finite training loss"))
    assert "at epoch 0" in first.user_attrs["reason"]
    fault = trials[3]
    assert fault.state == TrialState.FAIL and fault.user_attrs["status"] == "error"
    assert fault.user_attrs["reason"] == "RuntimeError: injected fault in trial 3"
    record = json.loads((tmp_path / "runs" / "t" / "trials" / "3.json").read_text())
    assert "injected fault" in record["traceback"]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 12
    # every finished trial's record is on disk, with its test accuracy stored but not used as the value
    for t in finished:
        rec = json.loads((tmp_path / "runs" / "t" / "trials" / f"{t.number}.json").read_text())
        assert rec["status"] == t.user_attrs["status"] and rec["number"] == t.number
    # no -inf trial is ever gbest: the swarm's gbest is the best finite trial at every point of the study
    swarm = study.sampler.swarm(study)
    assert swarm.gbest is not None and math.isfinite(swarm.gbest.value)
    assert swarm.gbest.value == max(t.value for t in finished if math.isfinite(t.value))
    assert all(b is None or math.isfinite(b.value) for b in swarm.pbest)


def test_cut_runs_stop_after_an_epoch_below_the_threshold(tmp_path):
    from dicelab.randomness.config import RandomnessConfig
    from dicelab.study.objective import evaluate_config
    from dicelab.train.engine import load_data_for

    cfg = _config(tmp_path)
    data = load_data_for(cfg.task)
    # lr 1e-4 with plain SGD learns nothing in an epoch: accuracy stays near chance (< 0.12)
    slow = RandomnessConfig.model_validate({"optimizer": "sgd", "lr": 1e-6, "batch_size": 128, "shuffle": False,
                                            "weight_init": 0.0})
    out = evaluate_config(cfg, slow, trial_number=0, data=data)
    assert out.status == "cut" and "below the cut 0.1200 after epoch 0" in out.reason
    assert len(out.records[0]["epochs"]) == 1 and out.value < 0.12
    assert out.test_accuracy is not None          # measured even for a cut run; never read by the search
    good = RandomnessConfig.model_validate({"optimizer": "momentum", "lr": 0.05, "batch_size": 32})
    ok = evaluate_config(cfg, good, trial_number=0, data=data)
    assert ok.status == "ok" and ok.value > 0.8 and len(ok.records[0]["epochs"]) == 3


def test_resume_with_a_changed_config_names_the_field_and_changes_nothing(tmp_path):
    cfg = _config(tmp_path, n_trials=4)
    url = f"journal:{tmp_path / 's.journal'}"
    run_study(cfg, url, quiet=True)
    before = [(t.number, t.value) for t in optuna.load_study(study_name="t", storage=runner_mod.open_storage(url)).trials]
    changed = load_study_config(data={**json.loads(cfg.to_json()), "task": {**TASK, "train": {**TASK["train"], "epochs": 4}}})
    with pytest.raises(ConfigError, match=r"already exists .* different config: task.train.epochs \(stored 3, now 4\)"):
        run_study(changed, url, quiet=True)
    after = [(t.number, t.value) for t in optuna.load_study(study_name="t", storage=runner_mod.open_storage(url)).trials]
    assert before == after
    # the same config with a larger budget resumes: only the missing trials run
    run_study(cfg, url, n_trials=6, quiet=True)
    rows = study_status(url, "t")[0]
    assert rows["finished"] == 6 and rows["budget"] == 6


def test_worker_on_an_unknown_study_names_it(tmp_path):
    url = f"journal:{tmp_path / 'empty.journal'}"
    with pytest.raises(ConfigError, match=r"no study 'nope' in this storage"):
        load_study(url, "nope")


def test_cli_run_status_export_and_bad_input(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study_file = tmp_path / "s.toml"
    study_file.write_text(
        '[study]\nname = "cli"\nsampler = "random-sparse"\nn_trials = 3\n'
        '[task]\ndataset = "digits"\n[task.model]\nname = "mlp"\nwidths = [16]\n'
        '[task.train]\nepochs = 2\nthreads = 1\n')
    code, out, err = run_cli("study", "run", str(study_file), "--quiet")
    assert code == 0, err
    assert "COMPLETE 3" in out and "next: dicelab study analyze" in out
    code, out, _ = run_cli("study", "status", "--study", "cli", "--json")
    assert code == 0 and json.loads(out)[0]["finished"] == 3
    code, out, _ = run_cli("study", "export", "--study", "cli", "--format", "csv", "--out", "t.csv")
    assert code == 0 and (tmp_path / "t.csv").read_text().count("\n") == 4
    code, _, err = run_cli("study", "run", str(study_file), "--set", "fitness.seeds=0")
    assert code == 2 and "fitness.seeds" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("study", "status", "--storage", "nosuch://x")
    assert code == 2 and "nosuch://x" in err
    code, _, err = run_cli("study", "run", str(tmp_path / "missing.toml"))
    assert code == 2 and "missing.toml: config file not found" in err


@pytest.mark.parametrize("pruner, seeds", [("median", 1), ("wilcoxon", 5)])
def test_pruners_stop_trials_and_pruned_trials_count_for_the_budget(tmp_path, pruner, seeds):
    cfg = load_study_config(data={
        "study": {"name": "p", "sampler": "random-sparse", "n_trials": 12, "seed": 1, "runs_dir": str(tmp_path / "r")},
        "task": {**TASK, "train": {**TASK["train"], "epochs": 4}},
        "fitness": {"pruner": pruner, "seeds": seeds, "cut_threshold": None}})
    url = f"journal:{tmp_path / 'p.journal'}"
    run_study(cfg, url, quiet=True)
    study, _, _ = load_study(url, "p")
    assert type(study.pruner).__name__ == {"median": "MedianPruner", "wilcoxon": "WilcoxonPruner"}[pruner]
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "a random-sparse search over all 22 techniques has trials far below the median"
    assert all(t.user_attrs["status"] == "pruned" and t.user_attrs["reason"].startswith("pruned") for t in pruned)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 12
    if pruner == "wilcoxon":       # pruned seed by seed: fewer than 5 runs recorded (with 3 seeds it never can:
        # the smallest one-sided signed-rank p of 3 pairs is 1/8 > 0.1)
        assert all(len(t.user_attrs["value_seeds"]) < 5 for t in pruned)


def test_test_accuracy_never_steers_the_search(tmp_path, monkeypatch):
    """Check 10 through the runner: a one-worker PSO study on digits, run twice, the second time with every
    stored test accuracy replaced by random numbers, gives bit-identical positions, values and best trial."""
    import random

    def run(tag: str) -> optuna.Study:
        cfg = _config(tmp_path, name=tag, n_trials=10)
        url = f"journal:{tmp_path / f'{tag}.journal'}"
        run_study(cfg, url, quiet=True)
        return load_study(url, tag)[0]

    clean = run("clean")
    real = runner_mod.evaluate_config
    noise = random.Random(0)

    def scrambled(*args, **kwargs):
        out = real(*args, **kwargs)
        out.test_accuracies = [noise.random() for _ in out.test_accuracies]
        return out

    monkeypatch.setattr(runner_mod, "evaluate_config", scrambled)
    noisy = run("noisy")
    a, b = clean.get_trials(), noisy.get_trials()
    assert [t.user_attrs["test_accuracy"] for t in a] != [t.user_attrs["test_accuracy"] for t in b]
    assert [t.value for t in a] == [t.value for t in b]
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.system_attrs["pso:x"] for t in a] == [t.system_attrs["pso:x"] for t in b]
    assert clean.best_trial.number == noisy.best_trial.number


def test_cli_worker_runs_n_local_workers_each_capped_by_n_trials(tmp_path, run_cli):
    cfg = load_study_config(data={
        "study": {"name": "w", "sampler": "random-sparse", "n_trials": 10, "runs_dir": str(tmp_path / "r")},
        "task": {**TASK, "model": {"name": "mlp", "widths": [16]}, "train": {"epochs": 2, "threads": 1}}})
    url = f"journal:{tmp_path / 'w.journal'}"
    create_study(cfg, url)
    code, out, err = run_cli("study", "worker", "--storage", url, "--study", "w", "--workers", "2", "--n-trials", "2")
    assert code == 0, err
    assert "2 complete" in out and "(and 1 spawned workers)" in out
    trials = load_study(url, "w")[0].get_trials()
    workers = [t.user_attrs["worker"] for t in trials if t.state == TrialState.COMPLETE]
    assert len(workers) == 4 and sorted(workers.count(w) for w in set(workers)) == [2, 2]
