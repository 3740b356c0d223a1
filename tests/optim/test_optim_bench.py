"""The optimizer benchmark: a reduced run through the Python API, the metrics it derives, its files, and
the ``dicelab bench optimizers`` command."""

from __future__ import annotations

import csv
import json

import pytest

from dicelab.errors import ConfigError
from dicelab.optim import BENCH_OPTIMIZERS, MomentumSchedule, build
from dicelab.optim.bench import RunCurve, print_report, run, run_metrics


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "ts"
    return run(tasks=["teacher-student"], seeds=[0, 1], epochs=2, timing_rounds=1, out=out), out


def test_reduced_benchmark_measures_every_optimizer_and_writes_its_files(small_bench, capsys):
    result, out = small_bench
    assert {m["optimizer"] for m in result.metrics} == set(BENCH_OPTIMIZERS)
    assert len(result.metrics) == len(BENCH_OPTIMIZERS) * 2
    by = {(m["optimizer"], m["seed"]): m for m in result.metrics}
    for seed in (0, 1):
        sgd = by[("sgd", seed)]
        assert sgd["ratio_first"] == 1.0 and sgd["ratio_budget"] <= 1.0
        assert sgd["target"] == sgd["final_train_error"]
        assert by[("rsgd", seed)]["state_multiple_of_p"] == 1.0 and by[("rsgd", seed)]["state_bytes"] == 4 * 6110
        assert by[("rsgd", seed)]["generator_bytes"] == 5056
        assert by[("adam", seed)]["state_multiple_of_p"] == 2.0 and by[("sgd", seed)]["state_bytes"] == 0
        # same init for every optimizer of a seed
        assert len({c.train_loss[0] for c in result.runs if c.seed == seed}) == 1
    rsgd_run = next(c for c in result.runs if c.optimizer == "rsgd")
    assert len(rsgd_run.gamma) == 2 * 32 and rsgd_run.gamma[0] == 0.0 and rsgd_run.reset_fraction[0] == 1.0
    assert all(t["step_ratio"] > 0 and t["iteration_ratio"] > 0 for t in result.timing["teacher-student"].values())
    names = {p.name for p in out.iterdir()}
    assert {"bench_optimizers.json", "bench_optimizers.csv", "curves_teacher-student.png", "gap_teacher-student.png",
            "gamma_teacher-student.png", "cost.png"} <= names
    rows = list(csv.DictReader((out / "bench_optimizers.csv").open()))
    assert len(rows) == 12 and rows[0]["task"] == "teacher-student"
    stored = json.loads((out / "bench_optimizers.json").read_text())
    assert stored["settings"]["seeds"] == [0, 1] and len(stored["runs"]) == 12
    targets = {t["id"]: t for t in stored["targets"]}
    assert targets["9"]["verdict"] == "not evaluated"  # two seeds: the §9 targets need five
    assert targets["11b"]["verdict"] == "MET" and targets["4"]["verdict"] == "MET"
    print_report(result)
    text = capsys.readouterr().out
    assert "teacher-student" in text and "ratio_budget" in text and "targets" in text


def test_steps_to_target_and_ratios_from_curves():
    def curve(name, errors, losses):
        return RunCurve("t", name, 0, 0.1, 10, 100, errors, losses, errors, losses, True, 10, 10, 40, 0, 0.0)

    sgd = curve("sgd", [0.9, 0.5, 0.3, 0.2, 0.2], [2.0, 1.0, 0.8, 0.6, 0.5])
    fast = curve("rsgd", [0.9, 0.3, 0.2, 0.1, 0.0], [2.0, 0.9, 0.5, 0.3, 0.1])
    never = curve("adam", [0.9, 0.8, 0.7, 0.6, 0.5], [2.0, 1.9, 1.8, 1.7, 1.6])
    m = run_metrics(fast, sgd)
    assert m["steps_to_target"] == 20 and m["ratio_budget"] == 0.5 and m["ratio_first"] == 20 / 30
    assert m["loss_steps_to_target"] == 20 and m["loss_ratio_first"] == 0.5
    assert m["min_test_error"] == 0.0 and m["min_test_epoch"] == 4 and m["gap"] == 0.0
    assert run_metrics(sgd, sgd)["ratio_first"] == 1.0 and run_metrics(sgd, sgd)["steps_to_target"] == 30
    assert run_metrics(never, sgd)["steps_to_target"] is None and run_metrics(never, sgd)["ratio_budget"] is None


def test_momentum_schedule_is_rsgd_mean_field():
    import torch

    p = torch.zeros(3, requires_grad=True)
    opt = build("sgd_momentum_schedule", [p], lr=0.1)
    betas = []
    for _ in range(5):
        p.grad = torch.ones(3)
        opt.step()
        betas.append(opt.param_groups[0]["momentum"])
    assert betas == [min(0.99, 1 - 0.999**t) for t in range(5)]
    assert MomentumSchedule(opt, beta_max=0.5).momentum(10_000) == 0.5


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="--tasks"):
        run(tasks=["cifar"])
    with pytest.raises(ConfigError, match="--optimizers"):
        run(optimizers=["lion"])
    with pytest.raises(ConfigError, match="--rsgd: gamma"):
        run(rsgd={"gamma": 3.0})
    with pytest.raises(ConfigError, match="--seeds"):
        run(seeds=[-1])


def test_cli_bench_optimizers(run_cli, tmp_path):
    args = ("bench", "optimizers", "--tasks", "teacher-student", "--optimizers", "rsgd", "--seeds", "1",
            "--epochs", "1", "--timing-rounds", "0", "--no-plots", "--out", str(tmp_path / "b"))
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert "teacher-student" in out and "rsgd" in out and "sgd" in out and "results:" in out
    assert (tmp_path / "b" / "bench_optimizers.csv").exists()
    code, out, err = run_cli(*args)  # never overwrite a stored result
    assert code == 2 and "already holds" in err
    code, out, err = run_cli("bench", "optimizers", "--rsgd", "granularity=\"row\"", "--out", str(tmp_path / "c"))
    assert code == 2 and err.startswith("error: --rsgd: granularity")
    code, out, err = run_cli("bench", "optimizers", "--help")
    assert code == 0 and "--quick" in out and "Examples" in out
