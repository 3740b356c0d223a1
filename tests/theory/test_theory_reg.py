"""Spec 03 §15 checks 1–4 and 9: Reg against closed forms, FD/Hutchinson/grad_reg, J, noise draws, off = GD,
classify."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from _theory_dtype import float64_default

from dicelab.seeding import generator
from dicelab.theory import (
    ZeroLossSet,
    anti_pgd,
    classify,
    dropconnect,
    dropout,
    grad_reg,
    gradient_descent,
    label_noise,
    minibatch,
    noise_jacobian,
    reg,
    sgld,
    simulate,
    weight_noise,
)
from dicelab.theory.errors import TheoryWarning
from dicelab.theory.experiments.e3 import make as e3_make
from dicelab.theory.losses import product_loss, two_layer_net
from dicelab.theory.objective import SquaredLoss


def _tanh_net(activation=torch.tanh):
    g = generator(0, "test.tanh_net")
    model = two_layer_net(3, 4, activation)
    X = torch.randn(5, 3, generator=g)
    w_star = torch.randn(1, model.d, generator=g)
    y = model(w_star, X)[0]
    return model, X, y, w_star


def _points(obj, w_on, n=5, scale=0.3, name="pts"):
    """n points on Γ (retracted perturbations of w_on) and n off Γ."""
    g = generator(0, name)
    Z = ZeroLossSet(obj)
    off = w_on + scale * torch.randn(n, w_on.shape[1], generator=g)
    on = Z.retract(w_on + 0.05 * torch.randn(n, w_on.shape[1], generator=g))
    return torch.cat([on, off])


def _close(a, b, rel=1e-6):
    tol = rel * torch.clamp(b.abs(), min=1.0)
    assert bool(((a - b).abs() <= tol).all()), f"max diff {(a - b).abs().max():.3e}"


def _hess_diag(f, w):
    out = []
    for row in w:
        H = torch.autograd.functional.hessian(lambda x: f(x[None])[0], row)
        out.append(H.diagonal())
    return torch.stack(out)


def _cases():
    L = product_loss()
    model, X, y, w_star = _tanh_net()
    tanh_loss = SquaredLoss(model, X, y, d=model.d)
    lin_model, Xl, yl, wl = _tanh_net(lambda z: z)
    w_e1 = torch.tensor([[2.0, 0.5]])
    cases = []
    # DropConnect on the product toy: Reg = (w1 w2)^2
    cases.append(("dropconnect-product", dropconnect(L, sigma=0.1), w_e1,
                  lambda w: (w[:, 0] * w[:, 1]) ** 2))
    # DropConnect on the tanh net: ½ Σ w_i² ∂²_ii L from the autograd Hessian diagonal
    cases.append(("dropconnect-tanh", dropconnect(tanh_loss, sigma=0.1), w_star,
                  lambda w: 0.5 * (w**2 * _hess_diag(tanh_loss.fn, w)).sum(-1)))

    def dropout_oracle(model_fn, Xd, act):
        def f(w):
            a = w[:, :4]
            B = w[:, 4:].reshape(-1, 4, 3)
            h = act(torch.einsum("nd,swd->snw", Xd, B))
            return (a[:, None, :] ** 2 * h**2).sum((-1, -2)) / (2 * Xd.shape[0])
        return f

    cases.append(("dropout-tanh", dropout(model, X, y, 4, sigma=0.3), w_star, dropout_oracle(model, X, torch.tanh)))
    cases.append(("dropout-tanh-shared", dropout(model, X, y, 4, sigma=0.3, mode="shared"), w_star,
                  dropout_oracle(model, X, torch.tanh)))
    cases.append(("dropout-linear", dropout(lin_model, Xl, yl, 4, sigma=0.3), wl,
                  dropout_oracle(lin_model, Xl, lambda z: z)))
    cases.append(("label-noise", label_noise(model, X, y, 1.0), w_star, lambda w: torch.full((w.shape[0],), 0.5)))
    cases.append(("minibatch", minibatch(tanh_loss, 5, 2), w_star, lambda w: torch.zeros(w.shape[0])))
    cases.append(("sgld", sgld(tanh_loss, sigma=0.5), w_star, lambda w: torch.zeros(w.shape[0])))
    cases.append(("weight-noise", weight_noise(tanh_loss, 0.1), w_star,
                  lambda w: 0.5 * _hess_diag(tanh_loss.fn, w).sum(-1)))
    w_e3 = torch.tensor([[1.0, 0.5, 0.8, 0.4]])
    cases.append(("e3-dropconnect", e3_make("dropconnect", 0.1), w_e3,
                  lambda w: ((w[:, :2] * w[:, 2:]) ** 2).sum(-1)))
    cases.append(("e3-dropout", e3_make("dropout", 0.1), w_e3,
                  lambda w: 0.5 * ((w[:, :2] * w[:, 2:]) ** 2).sum(-1)))
    return cases


with float64_default():  # the oracles' tensors are built at import time
    CASES = _cases()


@pytest.mark.parametrize("name,obj,w_on,oracle", CASES, ids=[c[0] for c in CASES])
def test_reg_exact_and_fd_match_closed_forms(name, obj, w_on, oracle):
    w = _points(obj, w_on, name=name)
    want = oracle(w)
    _close(reg(obj, w, "exact").value, want, 1e-6)
    _close(reg(obj, w, "fd", eps=1e-4).value, want, 1e-6)


@pytest.mark.parametrize("name", ["dropconnect-tanh", "dropout-tanh", "weight-noise", "e3-dropconnect"])
def test_grad_reg_matches_central_differences(name):
    _, obj, w_on, _ = next(c for c in CASES if c[0] == name)
    w = _points(obj, w_on, n=2, name=name)
    ga = grad_reg(obj, w, "exact")
    gc = grad_reg(obj, w, "exact", diff="central", h=1e-5)
    _close(ga, gc, 1e-6)


def test_reg_with_covariance_matches_dense_eta_hessian():
    _, obj, w_on, _ = next(c for c in CASES if c[0] == "dropconnect-tanh")
    w = _points(obj, w_on, n=2)
    m = obj.m
    g = generator(0, "test.C")
    A = torch.randn(m, m, generator=g)
    C = A @ A.T / m
    got = reg(obj, w, "exact", C=C).value
    for s in range(w.shape[0]):
        ws = w[s:s + 1]
        He = torch.autograd.functional.hessian(lambda e, ws=ws: obj.loss_hat(ws, e[None])[0], torch.zeros(m))
        assert abs(float(got[s]) - 0.5 * float((C * He).sum())) <= 1e-10 * max(1.0, abs(float(got[s])))


def test_hutchinson_se_and_exactness():
    _, obj, w_on, oracle = next(c for c in CASES if c[0] == "dropconnect-tanh")
    w = w_on + 0.2
    want = float(oracle(w)[0])
    h256 = reg(obj, w, "hutchinson", probes=256, gen=generator(0, "theory.probe"))
    assert abs(float(h256.value[0]) - want) <= 4 * float(h256.se[0])
    h1024 = reg(obj, w, "hutchinson", probes=1024, gen=generator(0, "theory.probe"))
    ratio = float(h1024.se[0] / h256.se[0])
    assert 0.4 <= ratio <= 0.6, ratio
    _, ln, w_ln, _ = next(c for c in CASES if c[0] == "label-noise")
    h = reg(ln, w_ln + 0.1, "hutchinson", probes=256)
    assert abs(float(h.value[0]) - 0.5) <= 1e-12


def test_label_noise_and_minibatch_jacobians():
    model, X, y, w_star = _tanh_net()
    obj = label_noise(model, X, y, 1.0)
    Z = ZeroLossSet(obj)
    w = _points(obj, w_star, n=3)[:3]  # on Γ
    J = noise_jacobian(obj, w)
    Df = SquaredLoss(model, X, y).jacobian(w)
    assert float((J + Df.transpose(-1, -2) / 5).abs().max()) <= 1e-12
    # generic autograd J (dense via JacobianOp) agrees with the closed form
    obj.jacobian_fn = None
    J2 = noise_jacobian(obj, w)
    assert float((J2 - J).abs().max()) <= 1e-12
    H = Z.hessian(w)
    assert float((J @ J.transpose(-1, -2) - H / 5).abs().max()) <= 1e-10
    mb = minibatch(SquaredLoss(model, X, y), 5, 2)
    assert float(noise_jacobian(mb, w).abs().max()) <= 1e-10


def test_noise_draw_moments():
    S = 1_000_000
    p = 0.8
    obj = dropconnect(lambda w: (w**2).sum(-1), p=p, d=1)
    obj.bind(torch.zeros(1, 1))
    eta = obj.sample_eta(generator(0, "theory.noise"), S)[:, 0]
    var = float(eta.var())
    assert abs(var / ((1 - p) / p) - 1) <= 0.01
    assert abs(float(eta.mean())) <= 4 * math.sqrt(var / S)
    n, b = 10, 2
    mb = minibatch(lambda w: w.expand(-1, n) ** 2, n, b)
    mb.bind(torch.zeros(1, 1))
    e = mb.sample_eta(generator(0, "theory.noise"), S)
    v = e.var(0)
    assert float((v / (n / b - 1) - 1).abs().max()) <= 0.01  # each weight, 10⁶ batches
    assert float(e.mean(0).abs().max()) <= 4 * math.sqrt((n / b - 1) / S)
    # every batch has exactly b members
    assert bool(((e > 0).sum(1) == b).all())


def test_sigma_zero_is_plain_gd_bit_identical():
    model, X, y, w_star = _tanh_net()
    sq = SquaredLoss(model, X, y, d=model.d)
    w0 = w_star + 0.3
    objs = [label_noise(model, X, y, 0.0), dropout(model, X, y, 4, p=1.0), dropconnect(sq, sigma=0.0),
            sgld(sq, sigma=0.0), weight_noise(sq, 0.0), anti_pgd(sq, 0.0), minibatch(sq, 5, 5)]
    for obj in objs:
        sim = simulate(obj, w0, 0.05, steps=100, regime="trivial", chains=3, project=None)
        gd = gradient_descent(obj, w0.expand(3, -1), 0.05, 100)
        assert torch.equal(sim.final_raw, gd), obj.name


def test_closed_form_steps_match_autograd():
    L = product_loss()
    w = torch.tensor([[2.0, 0.5], [1.1, 0.3]])
    eta = torch.tensor([[0.3], [-0.2]])
    ln = label_noise(L.model_fn, None, torch.ones(1), 1.0)
    auto = torch.func.grad(lambda x: ln.loss_hat(x, eta).sum())(w)
    assert torch.allclose(ln.grad_hat(w, eta), auto, atol=1e-14)
    mb = minibatch(L, 1, 1)
    assert torch.allclose(mb.grad_loss(w), torch.func.grad(lambda x: L(x).sum())(w), atol=1e-14)


def test_classify_regimes_and_warning():
    L = product_loss()
    w = torch.tensor([[2.0, 0.5]])
    assert classify(weight_noise(L, 0.1), w).regime == "non-degenerate"
    assert classify(label_noise(L.model_fn, None, torch.ones(1), 1.0), w).regime == "degenerate"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)  # η-degree 4: expected warning
        assert classify(dropconnect(L, sigma=0.1, dist="gauss", eta_degree=4), w).regime == "degenerate"
    assert classify(sgld(L, sigma=1.0), w).regime == "degenerate"
    assert classify(minibatch(L, 1, 1), w).regime == "trivial"
    w3 = torch.tensor([[1.0, 0.5, 0.8, 0.4]])
    assert classify(e3_make("dropconnect", 0.1), w3).regime == "non-degenerate"
    assert classify(e3_make("dropout", 0.1), w3).regime == "non-degenerate"
    c = classify(weight_noise(L, 0.1), w, alpha=0.02)
    assert c.steps_per_unit_tau == pytest.approx(1 / (0.02 * 0.01))
    with pytest.warns(TheoryWarning, match="sigma\\^2/lambda"):
        classify(weight_noise(L, 1.0), w)
    with pytest.warns(TheoryWarning, match="alpha\\*lambda_max"):
        classify(weight_noise(L, 0.1), w, alpha=1.0)


def test_jacobian_operator_matches_dense():
    _, obj, w_on, _ = next(c for c in CASES if c[0] == "dropout-tanh")
    w = w_on + 0.1
    J = noise_jacobian(obj, w)
    op = noise_jacobian(obj, w, dense=False)
    g = generator(0, "test.jop")
    eta = torch.randn(1, obj.m, generator=g)
    v = torch.randn(1, w.shape[1], generator=g)
    assert float((op.mv(eta) - (J @ eta[..., None])[..., 0]).abs().max()) <= 1e-12
    assert float((op.rmv(v) - (J.transpose(-1, -2) @ v[..., None])[..., 0]).abs().max()) <= 1e-12


def test_vmapped_exact_path_agrees_with_autograd_path():
    """m > 32 uses the vmapped torch.func HVPs; check it against the small-m autograd path and its gradient."""
    from torch.func import grad

    from dicelab.theory.reg import _reg_exact, _reg_exact_autograd

    _, obj, w_on, _ = next(c for c in CASES if c[0] == "dropout-tanh")
    w = w_on + 0.1
    v_auto, g_auto = _reg_exact_autograd(obj, w, None, True)
    assert float((_reg_exact(obj, w, None) - v_auto).abs().max()) <= 1e-12
    g_func = grad(lambda x: _reg_exact(obj, x, None).sum())(w)
    assert float((g_func - g_auto).abs().max()) <= 1e-12
