"""Spec 03 §15 check 7 (integrators) and the E1 identity (check 8)."""

from __future__ import annotations

import math

import torch

from dicelab.seeding import generator
from dicelab.theory import label_noise, limit_flow, limit_sde, sgld, weight_noise
from dicelab.theory.losses import ellipse_loss, product_loss

W0 = torch.tensor([[2.0, 0.5]], dtype=torch.float64)
D0 = 3.75


def D(w):
    return w[:, 0] ** 2 - w[:, 1] ** 2


def _e1():
    L = product_loss()
    return label_noise(L.model_fn, None, torch.ones(1), 1.0)


def _err(obj, rate, dtau):
    tr = limit_flow(obj, W0, [1.0], dtau=dtau, observables={"D": D})
    return abs(float(tr.observables["D"][-1, 0]) - D0 * math.exp(-rate))


def test_projected_rk4_order_and_accuracy():
    for obj, rate in ((_e1(), 1.0), (weight_noise(product_loss(), 0.1), 2.0)):
        assert _err(obj, rate, 1e-2) <= 1e-8
        e1, e2 = _err(obj, rate, 0.1), _err(obj, rate, 0.05)
        assert e1 / e2 >= 10, (e1, e2)


def test_reg_flow_records_nonincreasing_reg():
    tr = limit_flow(weight_noise(product_loss(), 0.1), W0, [0.5, 1.0], dtau=0.05)
    r = tr.observables["Reg"][:, 0]
    assert bool((r[1:] <= r[:-1] + 1e-12).all())


def test_limit_sde_stays_on_gamma_and_reduces_to_flow():
    obj = sgld(ellipse_loss(), sigma=2.0)
    tr = limit_sde(obj, torch.tensor([[2.0, 0.0]]), [0.2, 0.4], dtau=0.02, paths=300)
    F = obj.constraint(tr.w.reshape(-1, 2))
    assert float(F.abs().max()) <= 1e-10
    # P_T J = 0 (label noise): no noise enters, projected Euler converges to the RK4 flow
    e1 = _e1()
    a = limit_sde(e1, W0, [1.0], dtau=2e-3, paths=2, seed=0, observables={"D": D})
    b = limit_sde(e1, W0, [1.0], dtau=2e-3, paths=2, seed=5, observables={"D": D})
    assert torch.equal(a.w, b.w)
    flow = limit_flow(e1, W0, [1.0], dtau=0.05, observables={"D": D})
    d_fl = float(flow.observables["D"][-1, 0])
    d_sde = float(a.observables["D"][-1, 0])
    assert abs(d_sde - d_fl) <= 2e-3 * d_fl


def test_e1_identity_every_step():
    obj = _e1()
    alpha = 0.02
    g = generator(0, "theory.noise")
    w = W0.expand(64, -1).clone()
    for _ in range(100):
        eta = obj.sample_eta(g, 64)
        r = w[:, 0] * w[:, 1] - 1 - eta[:, 0]
        w_next = w - alpha * obj.grad_hat(w, eta)
        lhs, rhs = D(w_next), D(w) * (1 - alpha**2 * r**2)
        assert float(((lhs - rhs).abs() / rhs.abs()).max()) <= 1e-12
        w = w_next
