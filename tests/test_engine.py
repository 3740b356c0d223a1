import json
import time

import pytest
import torch
from _support import small_digits_config

from dicelab.config import load_run_config
from dicelab.train import Hook, Trainer, train_from_config


def metrics(record):
    return [{k: v for k, v in e.items() if not k.endswith("_s")} for e in record["epochs"]]


def test_same_seed_bit_identical_different_seed_differs(tmp_path):
    cfg = small_digits_config()
    a, b = Trainer(cfg), Trainer(cfg)
    ra, rb = a.fit(write=False), b.fit(write=False)
    assert metrics(ra) == metrics(rb)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    rc = Trainer(small_digits_config(seed=1)).fit(write=False)
    assert metrics(rc) != metrics(ra)
    assert [e["train_loss"] for e in rc["epochs"]] != [e["train_loss"] for e in ra["epochs"]]


def test_training_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    Trainer(small_digits_config()).fit(write=False)
    assert torch.equal(state, torch.get_rng_state())


def test_digits_mlp_reaches_95_percent_within_30_seconds(tmp_path):
    cfg = load_run_config("examples/digits_mlp.toml", overrides=["train.progress=false"])
    t0 = time.perf_counter()
    record = train_from_config(cfg, out_dir=tmp_path)
    elapsed = time.perf_counter() - t0
    print(f"digits MLP: test accuracy {record['final']['test_accuracy']:.4f}, "
          f"training {record['timings']['train_s']:.2f} s, wall {elapsed:.2f} s")
    assert record["status"] == "completed"
    assert record["final"]["test_accuracy"] >= 0.95
    assert record["timings"]["train_s"] <= 30.0


def test_mnist1d_mlp_reaches_60_percent(tmp_path):
    cfg = load_run_config("examples/mnist1d_mlp.toml", overrides=["train.progress=false"])
    record = train_from_config(cfg, out_dir=tmp_path)
    print(f"MNIST-1D MLP: test accuracy {record['final']['test_accuracy']:.4f}")
    assert record["final"]["test_accuracy"] >= 0.60


def test_diverging_run_ends_with_status_diverged(tmp_path, run_cli):
    cfg = load_run_config("examples/digits_mlp.toml", overrides=["train.lr=1e6", "train.progress=false"])
    record = train_from_config(cfg, out_dir=tmp_path / "api")
    assert record["status"] == "diverged"
    assert "training loss" in record["reason"] and "at epoch 0" in record["reason"]
    assert record["final"]["test_accuracy"] is None
    on_disk = json.loads((tmp_path / "api" / "record.json").read_text())
    assert on_disk["status"] == "diverged" and on_disk["reason"] == record["reason"]

    code, out, err = run_cli("train", "examples/digits_mlp.toml", "--set", "train.lr=1e6", "--set", "train.epochs=2",
                             "--out", str(tmp_path / "cli"), "-q")
    assert code == 0
    assert "status: diverged" in out and "Traceback" not in out + err


def test_nan_loss_counts_as_diverged():
    cfg = load_run_config("examples/digits_mlp.toml", overrides=["train.lr=1e6", "train.progress=false",
                                                                 "train.diverge_threshold=1e300"])
    record = Trainer(cfg).fit(write=False)
    assert record["status"] == "diverged" and record["reason"].startswith("non-finite training loss (nan)")


def test_huge_but_finite_loss_counts_as_diverged():
    # one hidden layer at lr 1e6: the loss reaches ~1e19 yet stays finite
    cfg = small_digits_config(train={"epochs": 3, "lr": 1e6, "optimizer": "sgd", "progress": False})
    record = Trainer(cfg).fit(write=False)
    assert record["status"] == "diverged"
    assert "training loss above train.diverge_threshold=10000" in record["reason"]
    relaxed = small_digits_config(train={"epochs": 2, "lr": 1e6, "optimizer": "sgd", "progress": False,
                                         "diverge_threshold": None})
    assert Trainer(relaxed).fit(write=False)["status"] == "completed"


def test_record_contents(tmp_path):
    record = train_from_config(small_digits_config(), out_dir=tmp_path)
    saved = json.loads((tmp_path / "record.json").read_text())
    assert saved["status"] == "completed" and saved["seed"] == 0
    assert saved["config"]["model"]["widths"] == [32]
    assert len(saved["epochs"]) == 3 and saved["epochs"][2]["steps"] == 3 * 13
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "batch_size", "train_s"):
        assert key in saved["epochs"][0]
    assert saved["versions"]["torch"] == torch.__version__
    assert saved["timings"]["total_s"] > 0 and saved["final"]["test_accuracy"] == record["final"]["test_accuracy"]


def test_new_run_folder_never_overwrites(tmp_path):
    cfg = small_digits_config(output={"dir": str(tmp_path), "checkpoint": False}, train={"epochs": 1, "progress": False})
    p1 = train_from_config(cfg)["path"]
    p2 = train_from_config(cfg)["path"]
    assert p1 != p2 and len(list(tmp_path.iterdir())) == 2


def test_existing_record_is_never_overwritten(tmp_path, run_cli):
    train_from_config(small_digits_config(train={"epochs": 1, "progress": False}), out_dir=tmp_path)
    before = (tmp_path / "record.json").read_text()
    code, _, err = run_cli("train", "examples/digits_mlp.toml", "--out", str(tmp_path), "-q")
    assert code == 2 and "already holds a run record" in err
    assert (tmp_path / "record.json").read_text() == before


class InterruptAt(Hook):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch(self, state, plan):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


def test_interrupted_run_keeps_its_record_and_checkpoint(tmp_path):
    cfg = small_digits_config(output={"checkpoint": True}, train={"epochs": 3, "progress": False})
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, [InterruptAt(1)]).fit(out_dir=tmp_path)
    saved = json.loads((tmp_path / "record.json").read_text())
    assert saved["status"] == "interrupted" and len(saved["epochs"]) == 1
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["next_epoch"] == 1


def test_checkpoint_resume_is_bit_identical(tmp_path):
    cfg = small_digits_config(output={"checkpoint": True}, train={"epochs": 4, "progress": False})
    straight = Trainer(cfg)
    r_straight = straight.fit(write=False)

    half = small_digits_config(output={"checkpoint": True}, train={"epochs": 2, "progress": False})
    Trainer(half).fit(out_dir=tmp_path / "first")
    resumed = Trainer(cfg)
    r_resumed = resumed.fit(out_dir=tmp_path / "second", resume_from=tmp_path / "first" / "checkpoint.pt")
    assert metrics(r_resumed) == metrics(r_straight)
    for pa, pb in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert r_resumed["resumed_from"].endswith("checkpoint.pt")
    # weights-only loading: the file holds tensors and plain values only
    payload = torch.load(tmp_path / "first" / "checkpoint.pt", weights_only=True)
    assert payload["next_epoch"] == 2


class Recorder(Hook):
    """Records the order of hook calls and doubles every per-sample loss."""

    def __init__(self):
        self.calls = []

    def on_epoch(self, state, plan):
        self.calls.append(("on_epoch", state.epoch))
        plan.batch_size = 100

    def on_batch(self, x, y, state):
        self.calls.append(("on_batch", state.step))
        return x, y

    def on_loss(self, per_sample, state):
        self.calls.append(("on_loss", state.step))
        return per_sample * 2

    def on_grads(self, params, state):
        self.calls.append(("on_grads", state.step))

    def before_step(self, params, state):
        self.calls.append(("before_step", state.step))

    def after_step(self, params, state):
        self.calls.append(("after_step", state.step))

    def on_epoch_end(self, state, metrics):
        metrics["recorder_calls"] = len(self.calls)


def test_hooks_run_in_the_documented_order_and_take_effect():
    rec = Recorder()
    record = Trainer(small_digits_config(train={"epochs": 2, "batch_size": 64, "progress": False,
                                                "optimizer": "sgd", "lr": 0.05}), [rec]).fit(write=False)
    assert rec.calls[:6] == [("on_epoch", 0), ("on_batch", 0), ("on_loss", 0), ("on_grads", 0), ("before_step", 0),
                             ("after_step", 1)]
    assert record["epochs"][0]["batch_size"] == 100 and record["epochs"][0]["steps"] == 8  # 800 / 100
    assert record["epochs"][1]["recorder_calls"] == len(rec.calls)
    # doubling the loss under plain SGD is doubling the learning rate
    plain = Trainer(small_digits_config(train={"epochs": 2, "batch_size": 100, "progress": False, "optimizer": "sgd",
                                               "lr": 0.1}))
    plain.fit(write=False)
    doubled = Trainer(small_digits_config(train={"epochs": 2, "batch_size": 64, "progress": False, "optimizer": "sgd",
                                                 "lr": 0.05}), [Recorder()])
    doubled.fit(write=False)
    for pa, pb in zip(plain.model.parameters(), doubled.model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-5)


class IdentityLoss(Hook):
    def on_loss(self, per_sample, state):
        return per_sample


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_per_sample_path_trains_bit_identically_to_the_fused_loss(reduction):
    # With an on_loss hook the engine reduces the per-sample vector itself; without one it uses the fused
    # cross-entropy. Both must give the same gradients, hence the same weights, bit for bit.
    lr = 0.05 if reduction == "mean" else 0.001
    cfg = small_digits_config(train={"epochs": 2, "loss_reduction": reduction, "lr": lr})
    fused, per_sample = Trainer(cfg), Trainer(cfg, [IdentityLoss()])
    r1, r2 = fused.fit(write=False), per_sample.fit(write=False)
    for pa, pb in zip(fused.model.parameters(), per_sample.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert [e["val_accuracy"] for e in r1["epochs"]] == [e["val_accuracy"] for e in r2["epochs"]]
    assert abs(r1["epochs"][-1]["train_loss"] - r2["epochs"][-1]["train_loss"]) < 1e-6


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_every_builtin_optimizer_trains(optimizer):
    lr = 0.005 if optimizer.startswith("adam") else 0.1
    record = Trainer(small_digits_config(train={"epochs": 5, "batch_size": 32, "optimizer": optimizer, "lr": lr,
                                                "progress": False})).fit(write=False)
    assert record["epochs"][-1]["val_accuracy"] > 0.8


def test_schedules_and_sum_reduction():
    cfg = small_digits_config(train={"epochs": 4, "lr": 0.08, "scheduler": "step", "step_size": 2, "gamma": 0.5,
                                     "progress": False})
    record = Trainer(cfg).fit(write=False)
    assert [e["lr"] for e in record["epochs"]] == [0.08, 0.08, 0.04, 0.04]
    cos = Trainer(small_digits_config(train={"epochs": 4, "lr": 0.1, "scheduler": "cosine", "progress": False}))
    lrs = [e["lr"] for e in cos.fit(write=False)["epochs"]]
    assert lrs[0] == 0.1 and lrs == sorted(lrs, reverse=True) and lrs[-1] > 0
    # sum with lr l equals mean with lr B*l under plain SGD (full batches of 160 here)
    mean = Trainer(small_digits_config(train={"epochs": 1, "batch_size": 160, "optimizer": "sgd", "lr": 0.16,
                                              "progress": False}))
    summed = Trainer(small_digits_config(train={"epochs": 1, "batch_size": 160, "optimizer": "sgd", "lr": 0.001,
                                                "loss_reduction": "sum", "progress": False}))
    mean.fit(write=False)
    summed.fit(write=False)
    for pa, pb in zip(mean.model.parameters(), summed.model.parameters(), strict=True):
        assert torch.allclose(pa, pb, rtol=1e-4, atol=1e-6)


def test_custom_module_and_teacher_dataset():
    cfg = load_run_config(data={"data": {"name": "teacher", "options": {"n_train": 500, "n_test": 500, "dim": 10}},
                                "train": {"epochs": 3, "lr": 0.1, "optimizer": "momentum", "progress": False}})
    net = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    record = Trainer(cfg, model=net).fit(write=False)
    assert record["status"] == "completed" and record["data"]["train"] == 400
    assert record["final"]["test_accuracy"] > 0.3
