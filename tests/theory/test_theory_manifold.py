"""Spec 03 §15 checks 5 and 6: retraction, projectors, Φ, and the degenerate drift."""

from __future__ import annotations

import math

import torch

from dicelab.seeding import generator
from dicelab.theory import ZeroLossSet
from dicelab.theory.experiments.e4e5 import objects
from dicelab.theory.losses import curve3d_loss, curve3d_point


def test_retract_converges_fast_from_distance_01():
    for loss, w_on in ((curve3d_loss(), curve3d_point(0.7)), (objects()[1], None)):
        Z = ZeroLossSet(loss)
        if w_on is None:
            w_on = Z.retract(torch.full((1, 40), 0.5))
        g = generator(0, "test.retract")
        dirs = torch.randn(8, w_on.shape[1], generator=g)
        w = w_on + 0.1 * dirs / dirs.norm(dim=-1, keepdim=True)
        out, res, iters = Z.retract_report(w, tol=1e-12, max_iter=20)
        assert float(res.max()) <= 1e-12 and iters <= 8, (float(res.max()), iters)


def test_tangent_projector_properties():
    _, L, _, _ = objects()
    Z = ZeroLossSet(L)
    g = generator(0, "test.pt")
    w = Z.retract(torch.full((3, 40), 0.5) + 0.05 * torch.randn(3, 40, generator=g))
    PT = Z.tangent_projector(w)
    assert float((PT - PT.transpose(-1, -2)).abs().max()) <= 1e-12
    assert float((PT @ PT - PT).abs().max()) <= 1e-12
    Df = L.jacobian(w)  # rows ∇f_i
    assert float((PT @ Df.transpose(-1, -2)).abs().max()) <= 1e-12
    # curve3d has no model: constraint Jacobian by autograd
    Z3 = ZeroLossSet(curve3d_loss())
    P3 = Z3.tangent_projector(curve3d_point(0.7))
    assert float((P3 @ P3 - P3).abs().max()) <= 1e-12


def test_phi_derivative_is_tangent_projector():
    Z = ZeroLossSet(curve3d_loss())
    w = curve3d_point(0.7)
    h = 1e-4
    E = torch.eye(3)
    both = Z.phi(torch.cat([w + h * E, w - h * E]))  # one batched flow for all six points
    cols = (both[:3] - both[3:]) / (2 * h)  # row j = ∂Φ e_j
    PT = Z.tangent_projector(w)[0]
    assert float((cols.T - PT).abs().max()) <= 1e-6


def test_phi_minus_retract_is_second_order():
    Z = ZeroLossSet(curve3d_loss())
    w = curve3d_point(0.7)
    g = generator(0, "test.phi_ret")
    v = torch.randn(1, 3, generator=g)
    v = v / v.norm()
    x = w + torch.tensor([[0.04], [0.02], [0.01]]) * v
    diffs = (Z.phi(x) - Z.retract(x)).norm(dim=-1).tolist()
    for a, b in zip(diffs[:-1], diffs[1:], strict=True):
        assert 3.5 <= a / b <= 4.5, diffs


def test_degenerate_drift_closed_vs_fd_and_oracles():
    Z = ZeroLossSet(curve3d_loss())
    w = curve3d_point(0.7)
    sp = Z.spectrum(w)
    assert abs(float(sp.lam_min_plus[0]) - 0.75) < 0.01 and abs(float(sp.lam_max[0]) - 10.5) < 0.01
    Sigma = torch.tensor([[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 1.5]])
    bc = Z.degenerate_drift(w, Sigma, "closed")
    bf = Z.degenerate_drift(w, Sigma, "fd", eps=2e-3)
    assert float((bc - bf).norm() / bf.norm()) <= 1e-4
    c = 0.7
    H = Z.hessian(w)[0]
    assert float((Z.degenerate_drift(w, c * H) - Z.drift_hessian_aligned(w, c)).abs().max()) <= 1e-10
    # Σ = I: P_T b = −¼ ∇_Γ log det₊H by central differences along Γ through retract
    b = Z.degenerate_drift(w, torch.eye(3))
    PT = Z.tangent_projector(w)[0]
    t = torch.linalg.eigh(PT)[1][:, -1]  # unit tangent
    h = 1e-4
    lp = Z.log_det_plus(Z.retract(w + h * t))
    lm = Z.log_det_plus(Z.retract(w - h * t))
    grad_gamma = float((lp - lm) / (2 * h)) * t
    want = -0.25 * grad_gamma
    got = PT @ b[0]
    assert float((got - want).abs().max()) <= 1e-6 * max(1.0, float(want.abs().max()))
    assert math.isfinite(float(Z.drift_isotropic(w).norm()))
    assert float((Z.drift_isotropic(w)[0] - got).abs().max()) <= 1e-8
