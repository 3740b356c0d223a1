"""Losses with a continuum of minimisers used by the experiments and tests (all float64, batched (S, d))."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from dicelab.theory.objective import Loss, SquaredLoss

__all__ = [
    "product_loss",
    "ellipse_loss",
    "curve3d_loss",
    "two_layer_net",
    "scalar_linear_net",
    "diagonal_linear_net",
    "e4_fixture",
]


def product_loss() -> SquaredLoss:
    """L = ½ (w₁w₂ − 1)²; Γ = {w₁w₂ = 1} (a hyperbola), F = w₁w₂ − 1 (E1, E2)."""
    def model(w: Tensor, X: Tensor | None = None) -> Tensor:
        return (w[:, 0] * w[:, 1])[:, None]

    def vjp(w: Tensor, g: Tensor) -> Tensor:
        return g * w[:, [1, 0]]

    model.vjp = vjp  # type: ignore[attr-defined]
    return SquaredLoss(model, None, torch.ones(1), d=2, name="w1*w2=1")


def _ellipse_g(w: Tensor) -> Tensor:
    return w[:, 0] ** 2 / 4 + w[:, 1] ** 2 - 1


def ellipse_loss() -> Loss:
    """L = ½ (1 + w₁²) g², g = w₁²/4 + w₂² − 1: Γ the ellipse, curvature of L varying along it (E6)."""
    def grad(w: Tensor) -> Tensor:
        g, h = _ellipse_g(w), 1 + w[:, 0] ** 2
        return torch.stack([w[:, 0] * g**2 + h * g * w[:, 0] / 2, 2 * h * g * w[:, 1]], dim=-1)

    return Loss(
        lambda w: 0.5 * (1 + w[:, 0] ** 2) * _ellipse_g(w) ** 2,
        d=2,
        constraint=lambda w: _ellipse_g(w)[:, None],
        name="ellipse",
        grad=grad,
        constraint_jacobian=lambda w: torch.stack([w[:, 0] / 2, 2 * w[:, 1]], dim=-1)[:, None, :],
    )


def curve3d_loss() -> Loss:
    """L = ½(1 + w₁²)(w₁²/4 + w₂² − 1)² + ½(w₃ − w₁w₂)²: Γ a closed curve in ℝ³, M = 2 (drift tests)."""

    def F(w: Tensor) -> Tensor:
        return torch.stack([_ellipse_g(w), w[:, 2] - w[:, 0] * w[:, 1]], dim=-1)

    def L(w: Tensor) -> Tensor:
        return 0.5 * (1 + w[:, 0] ** 2) * _ellipse_g(w) ** 2 + 0.5 * (w[:, 2] - w[:, 0] * w[:, 1]) ** 2

    return Loss(L, d=3, constraint=F, name="curve3d")


def curve3d_point(theta: float) -> Tensor:
    """The point (2cos θ, sin θ, sin 2θ) of the curve3d zero-loss set, shape (1, 3)."""
    import math

    return torch.tensor([[2 * math.cos(theta), math.sin(theta), math.sin(2 * theta)]], dtype=torch.float64)


def two_layer_net(d_in: int, width: int, activation: Callable[[Tensor], Tensor] = torch.tanh) -> Callable[..., Tensor]:
    """``f(x) = Σ_j a_j g_j φ(b_jᵀx)`` with w = [a (width), B (width × d_in) row-major], d = width·(1 + d_in).

    The returned ``model_fn(w, X, gate=None)`` maps (S, d), X (n, d_in) to (S, n); ``gate`` (S, n, width)
    multiplies unit outputs (dropout).
    """

    def model_fn(w: Tensor, X: Tensor, gate: Tensor | None = None) -> Tensor:
        a = w[:, :width]
        B = w[:, width:].reshape(w.shape[0], width, d_in)
        h = activation(torch.einsum("nd,swd->snw", X.to(w.dtype), B))
        if gate is not None:
            h = h * gate
        return torch.einsum("snw,sw->sn", h, a)

    model_fn.d = width * (1 + d_in)  # type: ignore[attr-defined]
    model_fn.width = width  # type: ignore[attr-defined]
    return model_fn


def scalar_linear_net(width: int = 2) -> tuple[Callable[..., Tensor], Tensor, Tensor]:
    """E3: f = Σ_j a_j b_j with x = y = 1; w = [a₁…a_k, b₁…b_k]. Returns (model_fn, X, y).

    Same function as ``two_layer_net(1, width, identity)`` at x = 1, written with fewer ops (a step is
    dominated by autograd overhead at this size).
    """

    def model_fn(w: Tensor, X: Tensor | None = None, gate: Tensor | None = None) -> Tensor:
        h = w[:, :width] * w[:, width:]
        if gate is not None:
            return (h[:, None, :] * gate).sum(-1)
        return h.sum(-1, keepdim=True)

    def vjp(w: Tensor, g: Tensor) -> Tensor:  # g: (S, 1)
        return torch.cat([g * w[:, width:], g * w[:, :width]], dim=-1)

    model_fn.vjp = vjp  # type: ignore[attr-defined]
    return model_fn, torch.ones(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)


def diagonal_linear_net(X: Tensor) -> Callable[[Tensor, Tensor | None], Tensor]:
    """f_i = ⟨u⊙u − v⊙v, x_i⟩ with w = [u, v] (d = 2p): β = u² − v² can change sign without stalling."""
    p = X.shape[1]

    def model_fn(w: Tensor, Xin: Tensor | None = None) -> Tensor:
        beta = w[:, :p] ** 2 - w[:, p:] ** 2
        return beta @ X.to(w.dtype).T

    def vjp(w: Tensor, g: Tensor) -> Tensor:  # Dfᵀg: ∂f/∂u = 2u⊙x, ∂f/∂v = −2v⊙x
        gb = g @ X.to(w.dtype)
        return torch.cat([2 * w[:, :p] * gb, -2 * w[:, p:] * gb], dim=-1)

    model_fn.vjp = vjp  # type: ignore[attr-defined]
    return model_fn


def e4_fixture() -> tuple[Tensor, Tensor, Tensor]:
    """The E4/E5 data: X = default_rng(0).standard_normal((10, 20)), β* = e₁ − e₂, y = Xβ* (float64)."""
    X = torch.from_numpy(np.random.default_rng(0).standard_normal((10, 20)))
    beta_star = torch.zeros(20, dtype=torch.float64)
    beta_star[0], beta_star[1] = 1.0, -1.0
    return X, X @ beta_star, beta_star
