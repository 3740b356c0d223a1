"""Spec 01 checks 2-5, 19 and 22: the catalog inside the training engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from dicelab.errors import ConfigError
from dicelab.hooks import Hook
from dicelab.randomness import technique, technique_names, techniques
from dicelab.train import Trainer, evaluate
from tests._support import small_digits_config
from tests.randomness._helpers import final_state, metrics, same_state, train

TRAIN_LR = 0.05   # the [train] lr of the test setup (tests/_support.py)


def explicitly_off(name: str) -> dict:
    main = technique(name).main()
    return {name: {main.name: main.off}}


def on_value(name: str):
    """The 'not a no-op' setting of spec 01 check 3."""
    main = technique(name).main()
    if main.kind == "choice":
        return main.choices[-1]
    if name == "lr":
        return 10 * TRAIN_LR
    if name in ("lr_schedule", "batch_schedule"):
        return 0.9
    return main.midpoint()


ALL_ON = {name: on_value(name) for name in technique_names()} | {
    "flip": "horizontal_and_vertical", "optimizer": "momentum", "lr": TRAIN_LR, "batch_size": 128}


@pytest.fixture(scope="module")
def reference():
    record, trainer = train()
    return metrics(record), final_state(trainer)


@pytest.mark.parametrize("name", technique_names())
def test_explicitly_off_is_bit_identical_to_absent(reference, name):
    record, trainer = train(explicitly_off(name))
    assert trainer.hooks.hooks == []          # never instantiated (R2)
    assert metrics(record) == reference[0]
    assert same_state(final_state(trainer), reference[1])


def test_all_off_and_paper_preset_are_bit_identical(reference):
    all_off = {k: v for name in technique_names() for k, v in explicitly_off(name).items()}
    for table in (all_off, {**all_off, "preset": "paper"}):
        record, trainer = train(table)
        assert metrics(record) == reference[0]
        assert same_state(final_state(trainer), reference[1])


@pytest.mark.parametrize("name", technique_names())
def test_each_technique_changes_training(reference, name):
    record, trainer = train({name: on_value(name)})
    assert record["status"] == "completed", record["reason"]
    assert not same_state(final_state(trainer), reference[1])


def test_all_on_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    cuda_before = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    record, _ = train(ALL_ON, epochs=1)
    assert record["status"] == "completed"
    assert torch.equal(torch.get_rng_state(), before)
    if cuda_before is not None:
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda_before, strict=True))


_SAMPLERS = {"rand", "randn", "randint", "randperm", "bernoulli", "normal", "normal_", "uniform_", "random_",
             "bernoulli_", "multinomial", "exponential_", "geometric_", "cauchy_", "log_normal_", "poisson"}
_FORBIDDEN = {"rand_like", "randn_like", "randint_like", "Dropout", "dropout", "manual_seed", "seed"}


def test_no_global_rng_use_in_the_catalog_source():
    root = Path(__file__).resolve().parents[2] / "src" / "dicelab" / "randomness"
    problems = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in _SAMPLERS and not any(k.arg == "generator" for k in node.keywords):
                    problems.append(f"{path.name}:{node.lineno} {name} without generator=")
                if name in _FORBIDDEN:
                    problems.append(f"{path.name}:{node.lineno} {name}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = getattr(node, "module", "") or ""
                names = [a.name for a in node.names]
                if "transforms" in mod or any("transforms" in n for n in names):
                    problems.append(f"{path.name}:{node.lineno} torchvision transforms")
    assert problems == []


class Spy(Hook):
    """Collects each epoch's order and the loss-noise multipliers of every step."""

    def __init__(self):
        self.orders, self.multipliers = [], []

    def on_epoch(self, state, plan):
        self.orders.append(plan.order.clone())

    def on_loss(self, per_sample, state):
        tset = self.trainer.hooks.hooks[0]
        if "loss_noise" in tset.by_name:
            self.multipliers.append(tset.by_name["loss_noise"].trace["multipliers"])
        return per_sample


def spy_run(table):
    cfg = small_digits_config(model={"widths": [128, 128]}, train={"batch_size": 128, "epochs": 3, "shuffle": False},
                              randomness=table)
    spy = Spy()
    trainer = Trainer(cfg, [spy], quiet=True)
    spy.trainer = trainer
    tset = trainer.hooks.hooks[0]
    if "loss_noise" in tset.by_name:
        tset.by_name["loss_noise"].trace = {}
    trainer.fit(write=False)
    return spy


def test_sources_are_independent():
    base = {"shuffle": True, "loss_noise": 0.5, "dropout": 0.2}
    ref = spy_run(base)
    assert len(ref.orders) == 3 and len(ref.multipliers) >= 3 * 7

    def equal_draws(spy, multipliers=True):
        same_orders = all(torch.equal(a, b) for a, b in zip(spy.orders, ref.orders, strict=True))
        if not multipliers:
            return same_orders
        return same_orders and all(torch.equal(a, b) for a, b in zip(spy.multipliers[:30], ref.multipliers[:30],
                                                                     strict=True))

    assert equal_draws(spy_run({**base, "seeds": {"dropout": 1}}))
    assert equal_draws(spy_run({**base, "dropout": 0.4}))
    for name in technique_names():
        if name not in base:
            assert equal_draws(spy_run({**base, name: on_value(name)}), multipliers=False), name
    assert not equal_draws(spy_run({**base, "seeds": {"shuffle": 1}}), multipliers=False)


def test_sum_with_lr_equals_mean_with_batch_times_lr():
    b, lr = 80, 1e-3   # 800 training samples: 10 full steps in one epoch
    for extra_sum, extra_mean in (({}, {}), ({"gradient_noise": 0.04}, {"gradient_noise": 0.04 / b**2})):
        _, t_sum = train(extra_sum, epochs=1, train={"loss_reduction": "sum", "lr": lr, "batch_size": b,
                                                     "optimizer": "sgd"})
        _, t_mean = train(extra_mean, epochs=1, train={"lr": b * lr, "batch_size": b, "optimizer": "sgd"})
        assert t_sum.state.step == 10
        for p, q in zip(t_sum.model.parameters(), t_mean.model.parameters(), strict=True):
            assert torch.allclose(p, q, rtol=1e-5, atol=1e-7)


def test_resume_with_all_on_is_bit_identical_and_eval_is_pure(tmp_path):
    sections = {"model": {"widths": [128, 128]}, "output": {"checkpoint": True}}
    straight_cfg = small_digits_config(**sections, train={"batch_size": 128, "epochs": 2, "shuffle": False},
                                       randomness=ALL_ON)
    straight = Trainer(straight_cfg, quiet=True)
    r_straight = straight.fit(write=False)
    half = small_digits_config(**sections, train={"batch_size": 128, "epochs": 1, "shuffle": False},
                               randomness=ALL_ON)
    Trainer(half, quiet=True).fit(out_dir=tmp_path / "first")
    resumed = Trainer(straight_cfg, quiet=True)
    r_resumed = resumed.fit(out_dir=tmp_path / "second", resume_from=tmp_path / "first" / "checkpoint.pt")
    assert metrics(r_resumed) == metrics(r_straight)
    assert same_state(final_state(resumed), final_state(straight))
    assert r_resumed["final"]["steps"] == r_straight["final"]["steps"]
    # eval purity: the trained (wrapped) model in eval mode is the plain model with the same weights
    plain = straight.hooks.unwrap(straight.model)
    assert "fc1.weight" in plain.state_dict()
    x = straight.data.test.x
    straight.model.eval()
    plain.eval()
    assert torch.equal(straight.model(x), plain(x))
    assert evaluate(straight.model, straight.data.test) == evaluate(plain, straight.data.test)


def test_image_techniques_need_image_data():
    for name in [c.name for c in techniques("data") if c.needs_images]:
        with pytest.raises(ConfigError, match=f"randomness.{name}: needs image inputs"):
            Trainer(small_digits_config(data={"name": "mnist1d"}, randomness={name: on_value(name)}), quiet=True)


def test_dicelab_train_applies_the_table(run_cli, tmp_path):
    import json

    root = Path(__file__).resolve().parents[2]
    code, out, err = run_cli("train", str(root / "examples/digits_mlp.toml"), "--out", str(tmp_path / "run"), "-q",
                             "--set", "train.epochs=2", "--set", "randomness.loss_noise=0.3",
                             "--set", "randomness.dropout=0.1")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert {"randomness.loss_noise", "randomness.dropout"} <= set(record["seeds"])
    assert record["config"]["randomness"]["loss_noise"] == {"sigma": 0.3}


def test_paper_faithful_example_trains(run_cli, tmp_path):
    import json

    root = Path(__file__).resolve().parents[2]
    code, out, err = run_cli("train", str(root / "examples/paper_faithful.toml"), "--out", str(tmp_path / "run"),
                             "-q", "--set", "train.epochs=2")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    tc = record["train_config"]
    assert (tc["optimizer"], tc["lr"], tc["batch_size"], tc["loss_reduction"]) == ("sgd", 1e-3, 128, "sum")
    assert record["status"] == "completed" and record["final"]["steps"] == 2 * 7   # 800 samples, batch 128
    assert {"randomness.weight_init", "randomness.shuffle"} <= set(record["seeds"])


def test_logged_loss_is_the_un_noised_mean():
    import copy

    import torch.nn.functional as F

    cfg = small_digits_config(train={"batch_size": 800, "epochs": 1, "shuffle": False},
                              randomness={"loss_noise": 1.0})
    trainer = Trainer(cfg, quiet=True)
    start = copy.deepcopy(trainer.model)
    record = trainer.fit(write=False)
    with torch.no_grad():
        clean = F.cross_entropy(start(trainer.data.train.x), trainer.data.train.y).item()
    assert abs(record["epochs"][0]["train_loss"] - clean) <= 1e-6


def test_paper_preset_gives_adam_the_keras_epsilon():
    _, paper = train({"preset": "paper", "optimizer": "adam"}, epochs=1)
    _, plain = train({"optimizer": "adam"}, epochs=1)
    assert paper.optimizer.param_groups[0]["eps"] == 1e-7
    assert plain.optimizer.param_groups[0]["eps"] == 1e-8
