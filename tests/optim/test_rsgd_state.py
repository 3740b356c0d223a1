"""Spec 05 §9 checks 4, 5 and 7: one state tensor per parameter, reproducible trajectories and resumes,
the global RNG left alone, and argument validation."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from _rsgd_support import params_of, same, student, train_steps

from dicelab.optim import ReinforcedSGD
from dicelab.optim.bench import _state_size


def rsgd(seed=0, **kw):
    return lambda p: ReinforcedSGD(p, lr=0.05, seed=seed, **kw)


@pytest.mark.parametrize("make, multiple", [
    (rsgd(), 1), (rsgd(variant="previous"), 1), (rsgd(granularity="tensor"), 1),
    (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), 1), (lambda p: torch.optim.Adam(p, lr=1e-3), 2),
])
def test_state_holds_one_buffer_per_parameter(ts_data, make, multiple):
    model = student(ts_data)
    opt = train_steps(model, make, ts_data, 1)
    numel, nbytes = _state_size(opt)
    p = sum(q.numel() for q in model.parameters())
    assert numel == multiple * p and nbytes == 4 * multiple * p
    if isinstance(opt, ReinforcedSGD):
        assert all(set(s) == {"buf"} for s in opt.state.values())
        assert sum(g.get_state().numel() for g in opt.generators.values()) == 5056


def test_same_seed_same_trajectory_and_different_seeds_differ(ts_data):
    model = student(ts_data)
    runs = {}
    for key, seed in (("a", 7), ("b", 7), ("c", 8)):
        m = copy.deepcopy(model)
        train_steps(m, rsgd(seed, schedule="constant", prob=0.6), ts_data, 100)
        runs[key] = params_of(m)
    assert same(runs["a"], runs["b"])
    assert not same(runs["a"], runs["c"])


def test_state_dict_resume_is_bit_identical(ts_data):
    make = rsgd(11, gamma=0.99)
    whole = copy.deepcopy(student(ts_data))
    train_steps(whole, make, ts_data, 100)

    first = copy.deepcopy(student(ts_data))
    opt = train_steps(first, make, ts_data, 50)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)  # plain tensors and ints only
    assert ckpt["optimizer"]["reinforce"]["t"] == 50
    assert ckpt["optimizer"]["reinforce"]["rng_state"]["cpu"].dtype == torch.uint8

    resumed = student(ts_data, seed=5)  # other weights and another seed: everything must come from the file
    resumed.load_state_dict(ckpt["model"])
    opt2 = rsgd(999, gamma=0.99)(resumed.parameters())
    opt2.load_state_dict(ckpt["optimizer"])
    assert opt2.reinforce_prob() == opt.reinforce_prob()
    train_steps(resumed, None, ts_data, 50, start=50, optimizer=opt2)
    assert same(params_of(resumed), params_of(whole))


def test_load_state_dict_rejects_a_foreign_state(ts_data):
    model = student(ts_data)
    sgd = train_steps(model, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), ts_data, 1)
    with pytest.raises(ValueError, match="reinforce"):
        ReinforcedSGD(model.parameters()).load_state_dict(sgd.state_dict())


def test_step_leaves_the_global_rng_alone(ts_data):
    model = student(ts_data)
    opt = rsgd(0, schedule="constant", prob=0.5)(model.parameters())
    train_steps(model, None, ts_data, 1, optimizer=opt)
    state = torch.random.get_rng_state()
    train_steps(model, None, ts_data, 5, optimizer=opt)
    assert torch.equal(state, torch.random.get_rng_state())


def test_default_seed_reads_the_global_seed_without_consuming_it():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = ReinforcedSGD([torch.zeros(3, requires_grad=True)])
    assert torch.equal(state, torch.random.get_rng_state())
    b = ReinforcedSGD([torch.zeros(3, requires_grad=True)], seed=123)
    assert torch.equal(a.generators["cpu"].get_state(), b.generators["cpu"].get_state())


def test_a_given_generator_is_used_and_advanced():
    g = torch.Generator().manual_seed(4)
    p = torch.zeros(100, requires_grad=True)
    opt = ReinforcedSGD([p], generator=g, schedule="constant", prob=0.5)
    assert opt.generators["cpu"] is g
    before = g.get_state()
    for _ in range(2):
        p.grad = torch.ones(100)
        opt.step()
    assert not torch.equal(before, g.get_state())


def test_reset_fraction_and_buffer_norm():
    p = torch.zeros(1000, requires_grad=True)
    opt = ReinforcedSGD([p], lr=0.0, schedule="constant", prob=0.25, seed=0)
    assert opt.last_reset_fraction != opt.last_reset_fraction and opt.buffer_norm() == 0.0  # nan before
    p.grad = torch.ones(1000)
    opt.step()
    assert opt.last_reset_fraction == 1.0  # first step: every buffer starts from g
    p.grad = torch.ones(1000)
    opt.step()
    buf = opt.state[p]["buf"]
    assert opt.last_reset_fraction == (buf == 1.0).sum().item() / 1000
    assert 0.70 < opt.last_reset_fraction < 0.80
    assert abs(opt.buffer_norm() - buf.norm().item()) < 1e-4


@pytest.mark.parametrize("kwargs, name", [
    ({"lr": -1.0}, "lr"), ({"lr": torch.ones(2)}, "lr"), ({"gamma": 0.0}, "gamma"), ({"gamma": 1.5}, "gamma"),
    ({"gamma0": -0.1}, "gamma0"), ({"gamma0": float("nan")}, "gamma0"),
    ({"schedule": "constant"}, "prob"), ({"schedule": "constant", "prob": 1.2}, "prob"), ({"prob": 0.5}, "prob"),
    ({"max_prob": 2.0}, "max_prob"), ({"variant": "both"}, "variant"), ({"granularity": "row"}, "granularity"),
    ({"time_unit": "batch"}, "time_unit"), ({"schedule": "linear"}, "schedule"), ({"weight_decay": -1}, "weight_decay"),
    ({"differentiable": True}, "differentiable"), ({"fused": True}, "fused"), ({"seed": 1.5}, "seed"),
    ({"foreach": "yes"}, "foreach"),
])
def test_invalid_arguments_raise_value_errors_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        ReinforcedSGD([torch.zeros(2, requires_grad=True)], **kwargs)


def test_invalid_group_value_and_sparse_gradient_are_named():
    with pytest.raises(ValueError, match="^gamma:"):
        ReinforcedSGD([{"params": [torch.zeros(2, requires_grad=True)], "gamma": 2.0}])
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = ReinforcedSGD([torch.zeros(2, requires_grad=True), *emb.parameters()])
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="parameter 1 of param group 0"):
        opt.step()


def test_callable_schedule_is_used_and_checked():
    p = torch.zeros(4, requires_grad=True)
    opt = ReinforcedSGD([p], schedule=lambda t: min(1.0, 0.1 * t), max_prob=0.5)
    assert opt.reinforce_prob() == 0.0
    opt._t = 3  # noqa: SLF001
    assert abs(opt.reinforce_prob() - 0.3) < 1e-12
    opt._t = 9  # noqa: SLF001
    assert opt.reinforce_prob() == 0.5
    bad = ReinforcedSGD([p], schedule=lambda t: 2.0)
    with pytest.raises(ValueError, match="^schedule:"):
        bad.reinforce_prob()
