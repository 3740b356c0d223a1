"""Spec 05 §9 check 1: the limits Γ ≡ 0 (plain SGD) and Γ ≡ 1 (frictionless heavy ball) hold bit for bit,
and foreach on / off give the same trajectory (check 5, last item)."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from _rsgd_support import params_of, same, student, train_steps

from dicelab.optim import ReinforcedSGD

LR = 0.05
ZERO = [dict(schedule="constant", prob=0.0), dict(gamma=1.0, gamma0=1.0)]
ONE = [dict(schedule="constant", prob=1.0), dict(gamma0=0.0)]


def trajectory(data, make, steps=20, model=None):
    model = copy.deepcopy(model)
    train_steps(model, make, data, steps)
    return params_of(model)


@pytest.mark.parametrize("wd", [0.0, 1e-3])
@pytest.mark.parametrize("foreach", [False, True])
def test_gamma_zero_is_sgd_and_gamma_one_is_frictionless_momentum(ts_data, wd, foreach):
    model = student(ts_data)
    sgd = trajectory(ts_data, lambda p: torch.optim.SGD(p, lr=LR, weight_decay=wd, foreach=foreach), model=model)
    heavy = trajectory(ts_data, lambda p: torch.optim.SGD(p, lr=LR, momentum=1.0, dampening=0, weight_decay=wd,
                                                          foreach=foreach), model=model)
    assert not same(sgd, heavy)
    for kw in ZERO:
        for variant in ("accumulated", "previous"):
            for gran in ("element", "tensor", "step"):
                got = trajectory(ts_data, partial(ReinforcedSGD, lr=LR, weight_decay=wd, foreach=foreach,
                                                          variant=variant, granularity=gran, **kw), model=model)
                assert same(got, sgd), (kw, variant, gran)
    for kw in ONE:
        for gran in ("element", "tensor", "step"):
            got = trajectory(ts_data, partial(ReinforcedSGD, lr=LR, weight_decay=wd, foreach=foreach,
                                                      granularity=gran, **kw), model=model)
            assert same(got, heavy), (kw, gran)


@pytest.mark.parametrize("foreach", [False, True])
def test_previous_variant_at_gamma_one_adds_the_last_gradient(ts_data, foreach):
    wd = 1e-3
    model = student(ts_data)
    got = trajectory(ts_data, lambda p: ReinforcedSGD(p, lr=LR, weight_decay=wd, foreach=foreach, variant="previous",
                                                      schedule="constant", prob=1.0), model=model)

    class Reference(torch.optim.Optimizer):  # d_t = g_t + g_{t-1}, by hand
        def __init__(self, params):
            super().__init__(params, {})

        @torch.no_grad()
        def step(self):
            for p in self.param_groups[0]["params"]:
                g = p.grad.add(p, alpha=wd)
                prev = self.state[p].get("prev")
                p.add_(g if prev is None else g + prev, alpha=-LR)
                self.state[p]["prev"] = g

    ref = trajectory(ts_data, Reference, model=model)
    assert same(got, ref)


@pytest.mark.parametrize("variant", ["accumulated", "previous"])
@pytest.mark.parametrize("gran", ["element", "tensor", "step"])
def test_foreach_on_and_off_are_bit_identical(ts_data, variant, gran):
    model = student(ts_data)

    def make(foreach, seed=3):
        return lambda p: ReinforcedSGD(p, lr=LR, weight_decay=1e-3, foreach=foreach, variant=variant, granularity=gran,
                                       schedule="constant", prob=0.6, seed=seed)

    a = trajectory(ts_data, make(True), steps=30, model=model)
    b = trajectory(ts_data, make(False), steps=30, model=model)
    c = trajectory(ts_data, make(False, seed=4), steps=30, model=model)
    assert same(a, b)
    assert not same(a, c)  # the draws matter: another seed, another trajectory


def test_maximize_ascends_exactly_like_torch_sgd(ts_data):
    model = student(ts_data)
    sgd = trajectory(ts_data, lambda p: torch.optim.SGD(p, lr=LR, momentum=1.0, dampening=0, maximize=True,
                                                        weight_decay=1e-3), model=model)
    got = trajectory(ts_data, lambda p: ReinforcedSGD(p, lr=LR, maximize=True, weight_decay=1e-3, gamma0=0.0),
                     model=model)
    assert same(got, sgd)


def test_tensor_lr_and_param_groups(ts_data):
    model = student(ts_data)
    sgd = trajectory(ts_data, lambda p: torch.optim.SGD([{"params": list(p)[:2]}, {"params": list(p)[2:], "lr": 0.01}],
                                                        lr=LR), model=model)
    got = trajectory(ts_data, lambda p: ReinforcedSGD(
        [{"params": list(p)[:2]}, {"params": list(p)[2:], "lr": torch.tensor(0.01)}], lr=LR,
        schedule="constant", prob=0.0), model=model)
    assert same(got, sgd)
