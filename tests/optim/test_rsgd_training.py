"""R-SGD in training: the acceleration smoke check (spec 05 §9 check 6), ``optimizer = "rsgd"`` in run
configs (seeded from the run, logged per epoch, resumable bit for bit) and the example config."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _support import small_digits_config

from dicelab.config import load_run_config
from dicelab.data import Split
from dicelab.errors import ConfigError
from dicelab.optim import ReinforcedSGD
from dicelab.optim.bench import TASKS, train_run
from dicelab.seeding import derive_seed
from dicelab.train import Trainer, train_from_config


def test_rsgd_trains_the_teacher_student_task_faster_than_sgd(ts_data):
    # The test split is not used by this check; a small one keeps the per-epoch evaluation cheap.
    data = dataclasses.replace(ts_data, test=Split(ts_data.test.x[:64], ts_data.test.y[:64]))
    for seed in (0, 1, 2):
        sgd = train_run(TASKS["teacher-student"], data, "sgd", seed, epochs=20, lr=0.05, record_steps=False)
        rsgd = train_run(TASKS["teacher-student"], data, "rsgd", seed, epochs=20, lr=0.05, record_steps=False)
        initial, final_sgd, final_rsgd = sgd.train_loss[0], sgd.train_loss[-1], rsgd.train_loss[-1]
        print(f"seed {seed}: initial {initial:.3f}, SGD {final_sgd:.3f}, R-SGD {final_rsgd:.3f} "
              f"(ratio {final_rsgd / final_sgd:.2f})")
        assert rsgd.train_loss[0] == initial  # same student, same start
        assert final_rsgd <= 0.85 * final_sgd
        assert final_rsgd <= 0.2 * initial


def rsgd_config(checkpoint: bool = False, **train):
    return small_digits_config(train={"optimizer": "rsgd", "lr": 0.05, "epochs": 3, **train},
                               output={"checkpoint": checkpoint})


def test_run_config_rsgd_is_seeded_from_the_run_and_logged_per_epoch():
    trainer = Trainer(rsgd_config())
    record = trainer.fit(write=False)
    assert record["status"] == "completed"
    assert isinstance(trainer.optimizer, ReinforcedSGD)
    assert record["seeds"]["optim.reinforce"] == derive_seed(0, "optim.reinforce")
    fresh = torch.Generator().manual_seed(derive_seed(0, "optim.reinforce"))
    assert trainer.optimizer.generators["cpu"].initial_seed() == fresh.initial_seed()
    steps_per_epoch = record["epochs"][0]["steps"]
    for e, epoch in enumerate(record["epochs"]):
        assert epoch["rsgd_prob"] == pytest.approx(1 - 0.999 ** ((e + 1) * steps_per_epoch), abs=1e-12)
        assert 0.0 < epoch["rsgd_reset_fraction"] <= 1.0 and epoch["rsgd_buf_norm"] > 0.0
    other = Trainer(small_digits_config(seed=1, train={"optimizer": "rsgd", "lr": 0.05, "epochs": 3})).fit(write=False)
    assert other["seeds"]["optim.reinforce"] != record["seeds"]["optim.reinforce"]


def test_epoch_time_unit_follows_the_engine_epochs():
    record = Trainer(rsgd_config(optimizer_options={"time_unit": "epoch", "gamma": 0.5})).fit(write=False)
    # Γ is logged after the epoch's steps; with time_unit="epoch" it is Γ(epoch)
    assert [e["rsgd_prob"] for e in record["epochs"]] == [1 - 0.5**e for e in range(3)]


def test_explicit_seed_option_wins_and_same_seed_repeats():
    a = Trainer(rsgd_config(optimizer_options={"seed": 5}))
    b = Trainer(rsgd_config(optimizer_options={"seed": 5}))
    ra, rb = a.fit(write=False), b.fit(write=False)
    assert a.optimizer.generators["cpu"].initial_seed() == derive_seed(5, "optim.reinforce")
    assert [e["train_loss"] for e in ra["epochs"]] == [e["train_loss"] for e in rb["epochs"]]
    c = Trainer(rsgd_config()).fit(write=False)
    assert [e["train_loss"] for e in c["epochs"]] != [e["train_loss"] for e in ra["epochs"]]


def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    whole = Trainer(rsgd_config(epochs=4))
    whole.fit(write=False)
    Trainer(rsgd_config(checkpoint=True, epochs=2)).fit(out_dir=tmp_path / "a")
    resumed = Trainer(rsgd_config(epochs=4))
    record = resumed.fit(out_dir=tmp_path / "b", resume_from=tmp_path / "a" / "checkpoint.pt")
    assert record["status"] == "completed" and resumed.optimizer.steps == whole.optimizer.steps
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("train, field", [
    ({"optimizer_options": {"gamma": 2.0}}, "train.optimizer_options.gamma"),
    ({"optimizer_options": {"granularity": "row"}}, "train.optimizer_options.granularity"),
    ({"optimizer_options": {"gama": 0.9}}, "train.optimizer_options"),
    ({"momentum": 0.9}, "train.momentum"),
])
def test_bad_rsgd_options_are_config_errors_naming_the_field(train, field):
    with pytest.raises(ConfigError, match=f"^{field}"):
        Trainer(rsgd_config(**train))


def test_example_config_trains_to_95_percent(tmp_path):
    cfg = load_run_config("examples/digits_rsgd.toml", overrides=["train.progress=false"])
    assert cfg.train.optimizer == "rsgd"
    record = train_from_config(cfg, out_dir=tmp_path)
    print(f"digits R-SGD: test accuracy {record['final']['test_accuracy']:.4f}, "
          f"final Γ {record['epochs'][-1]['rsgd_prob']:.3f}")
    assert record["status"] == "completed"
    assert record["final"]["test_accuracy"] >= 0.95
    assert record["epochs"][-1]["rsgd_prob"] == 0.9  # max_prob reached
