"""Losses, the SIGN rule and the gradient routing of spec 04 §2, §5 (checks 4, 5, 6)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dicelab.memorization import RandomLabelBank, RLPHeads, complement_penalty, uniform_penalty
from dicelab.seeding import generator


def test_complement_is_stable_where_the_naive_form_overflows():
    # check 6: z_ŷ − max_{i≠ŷ} z_i = 50 in float32
    z = torch.zeros(3, 10)
    z[:, 4] = 50.0
    z[1, 2] = 1.0
    z[2] = torch.linspace(-3, 2, 10)
    z[2, 4] = 52.0
    yhat = torch.full((3,), 4)
    r = complement_penalty(z, yhat)
    ref = complement_penalty(z.double(), yhat)
    assert torch.isfinite(r).all()
    assert torch.allclose(r.double(), ref, rtol=1e-5, atol=0)
    naive = -torch.log(1 - torch.softmax(z, dim=1)[torch.arange(3), yhat])
    assert torch.isinf(naive).any()
    # and it is -log(1 - p) where the naive form is fine
    z2 = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    y2 = torch.arange(5)
    p = torch.softmax(z2.double(), 1)[torch.arange(5), y2]
    assert torch.allclose(complement_penalty(z2, y2).double(), -torch.log1p(-p), atol=1e-6)


def test_uniform_penalty_is_kl_from_uniform():
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p = torch.softmax(z, 1)
    kl = (1 / 6 * (math.log(1 / 6) - torch.log(p))).sum(1)
    assert torch.allclose(uniform_penalty(z), kl, atol=1e-12)
    assert torch.allclose(uniform_penalty(torch.zeros(2, 6)), torch.zeros(2), atol=1e-7)


class Toy(nn.Sequential):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        super().__init__(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def toy(reg="complement", lam=1.0, n=7, m=64):
    model = Toy()
    x = torch.randn(m, 5, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 3, (m,), generator=torch.Generator().manual_seed(3))
    bank = RandomLabelBank(m, n, generator=generator(0, "memorization.bank"))
    rlp = RLPHeads(model, ["1"], bank, generator=generator(0, "memorization.heads"), lam=lam, reg=reg,
                   example_input=x[:2])
    return model, rlp, x, y, torch.arange(m)


def mean_p_hat(model, rlp, x, idx):
    with torch.no_grad():
        model(x)
        return rlp.losses(idx).stats["1"][0].p_hat.item()


def test_sign_rule_one_regulariser_step_lowers_the_random_label_probability():
    # check 4: toy MLP, m = 64, n = 7, seed 0, one extractor SGD step (lr 0.5) on out.reg alone
    results = {}
    for sign in ("complement", "printed"):
        model, rlp, x, y, idx = toy()
        head_before = [p.detach().clone() for p in rlp.heads.parameters()]
        phi_before = [p.detach().clone() for p in model[2].parameters()]
        before = mean_p_hat(model, rlp, x, idx)
        model(x)
        out = rlp.losses(idx)
        # the paper's printed form +log(1 − p̂) is the negative of R: descending it raises p̂
        loss = out.reg if sign == "complement" else -out.reg
        model.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.grad is None for p in rlp.heads.parameters())          # ψ: no gradient
        assert all(p.grad is None for p in model[2].parameters())           # φ: no gradient
        with torch.no_grad():
            for p in model[0].parameters():
                p -= 0.5 * p.grad
        assert all(torch.equal(a, b) for a, b in zip(head_before, rlp.heads.parameters(), strict=True))
        assert all(torch.equal(a, b) for a, b in zip(phi_before, model[2].parameters(), strict=True))
        results[sign] = (before, mean_p_hat(model, rlp, x, idx))
    (b1, a1), (b2, a2) = results["complement"], results["printed"]
    print(f"mean p̂_ŷ: {b1:.4f} -> {a1:.4f} (R) vs -> {a2:.4f} (printed +log(1-p̂))")
    assert b1 == b2
    assert a1 < b1 < a2


def grads(model, rlp, loss):
    model.zero_grad(set_to_none=True)
    rlp.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    theta = [p.grad for p in model[0].parameters()]
    phi = [p.grad for p in model[2].parameters()]
    psi = [p.grad for p in rlp.heads.parameters()]
    return theta, phi, psi


def nonzero(gs):
    return all(g is not None and g.abs().sum() > 0 for g in gs)


def none(gs):
    return all(g is None for g in gs)


@pytest.mark.parametrize("reg", ["complement", "uniform"])
def test_routing_each_term_alone(reg):
    # check 5: L_class → θ, φ; L_rnd → ψ; R → θ only
    model, rlp, x, y, idx = toy(reg=reg, lam=0.5)
    logits = model(x)
    out = rlp.losses(idx)
    theta, phi, psi = grads(model, rlp, F.cross_entropy(logits, y))
    assert nonzero(theta) and nonzero(phi) and none(psi)
    theta, phi, psi = grads(model, rlp, out.rnd)
    assert none(theta) and none(phi) and nonzero(psi)
    theta, phi, psi = grads(model, rlp, out.reg)
    assert nonzero(theta) and none(phi) and none(psi)
    assert out.has_reg and out.reg.item() > 0


def test_grl_gives_theta_minus_lambda_times_the_feature_gradient():
    lam = 0.7
    model, rlp, x, y, idx = toy(reg="grl", lam=lam)
    model(x)
    out = rlp.losses(idx)
    assert not out.has_reg and out.reg.item() == 0.0
    theta, phi, psi = grads(model, rlp, out.rnd)
    assert nonzero(theta) and none(phi) and nonzero(psi)
    # manual: L_rnd as a function of θ through the head with ψ fixed, times −λ
    model2, rlp2, *_ = toy(reg="grl", lam=lam)
    head = rlp2.heads[0][0]
    a = model2[1](model2[0](x))
    manual = F.cross_entropy(F.linear(a, head.weight.detach(), head.bias.detach()), rlp2.bank[idx][0])
    ref = torch.autograd.grad(manual, list(model2[0].parameters()))
    for g, r in zip(theta, ref, strict=True):
        assert torch.allclose(g, -lam * r, atol=1e-6)
    # ψ gets exactly the plain L_rnd gradient (it descends L_rnd once)
    z = head(a.detach())
    ref_psi = torch.autograd.grad(F.cross_entropy(z, rlp2.bank[idx][0]), list(head.parameters()))
    for g, r in zip(psi, ref_psi, strict=True):
        assert torch.allclose(g, r, atol=1e-6)


def test_lambda_zero_builds_no_regulariser_graph():
    for reg in ("complement", "uniform", "grl"):
        model, rlp, x, y, idx = toy(reg=reg, lam=0.0)
        model(x)
        out = rlp.losses(idx, reduction="none")
        assert out.rnd.shape == (64,) and not out.has_reg
        theta, phi, psi = grads(model, rlp, out.rnd.mean())
        assert none(theta) and none(phi) and nonzero(psi)
