"""The three RLP losses and the regulariser variants, per sample, from logits (spec 04 §5).

``z`` are the RLP head's logits (B, n) and ``yhat`` the random labels (B,). Everything is computed from
logits with ``logsumexp``, never through ``softmax``, so a memorized sample (p̂_ŷ → 1) keeps a finite,
exact regulariser value.

The SIGN rule: the 2026 paper prints the penalty as ``+λ·log(1 − p̂_ŷ)``; minimised as written that drives
p̂_ŷ *up*. dicelab implements the stated goal: the extractor descends ``R = −log(1 − p̂_ŷ) ≥ 0``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_label_loss", "complement_penalty", "uniform_penalty", "penalty", "grad_reverse"]


def random_label_loss(z: Tensor, yhat: Tensor) -> Tensor:
    """L_rnd = −log p̂_ŷ per sample."""
    return F.cross_entropy(z, yhat, reduction="none")


def complement_penalty(z: Tensor, yhat: Tensor) -> Tensor:
    """R = −log(1 − p̂_ŷ) = logsumexp(z) − logsumexp(z with z_ŷ := −∞), per sample; needs n ≥ 2, no eps."""
    if z.shape[1] < 2:
        raise ValueError("the complement penalty needs at least two random-label values")
    others = z.scatter(1, yhat.unsqueeze(1), float("-inf"))
    return torch.logsumexp(z, dim=1) - torch.logsumexp(others, dim=1)


def uniform_penalty(z: Tensor, yhat: Tensor | None = None) -> Tensor:
    """KL(U_n ‖ p̂) = −(1/n)·Σ_i log p̂_i − log n = logsumexp(z) − mean(z) − log n, per sample (≥ 0)."""
    return torch.logsumexp(z, dim=1) - z.mean(dim=1) - math.log(z.shape[1])


def penalty(reg: str, z: Tensor, yhat: Tensor) -> Tensor:
    """The per-sample regulariser the extractor descends for ``reg`` (``complement`` or ``uniform``)."""
    if reg == "complement":
        return complement_penalty(z, yhat)
    if reg == "uniform":
        return uniform_penalty(z, yhat)
    raise ValueError(f"no penalty term for reg={reg!r} (grl rides in the random-label loss)")


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: Tensor, scale: float) -> Tensor:
    """Identity forward; backward multiplies the gradient by ``−scale`` (a gradient-reversal layer)."""
    return _GradReverse.apply(x, float(scale))
