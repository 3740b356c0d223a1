"""Noise-injection models: each constructor returns a :class:`NoisyObjective` with ``L̂(w, 0) = L(w)``.

Conventions (spec §4): Bernoulli masks with keep probability p use η = mask/p − 1, so σ² = (1 − p)/p;
``sigma=0`` (or p = 1, or b = n) switches the noise off and the step is plain gradient descent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from dicelab.errors import ConfigError
from dicelab.theory._autodiff import batched_hessian, batched_jacobian
from dicelab.theory.objective import (
    DriftHint,
    Loss,
    NoisyObjective,
    SquaredLoss,
    as_loss,
    check_sigma,
    gaussian_sampler,
    rademacher_sampler,
)

__all__ = ["label_noise", "minibatch", "dropout", "dropconnect", "sgld", "weight_noise", "anti_pgd"]


def _keep_sigma(p: float | None, sigma: float | None) -> tuple[float, float]:
    """(keep probability, σ) from exactly one of p, sigma (σ² = (1 − p)/p)."""
    if (p is None) == (sigma is None):
        raise ConfigError("give exactly one of p= (keep probability) or sigma=")
    if p is not None:
        p = float(p)
        if not 0 < p <= 1:
            raise ConfigError(f"keep probability p must be in (0, 1], got {p}")
        return p, math.sqrt((1 - p) / p)
    s = check_sigma(sigma)
    return 1.0 / (1.0 + s * s), s


def _mask_sampler(m_fn: Callable[[], int], p: float, sigma: float, dist: str) -> Callable:
    if dist == "bernoulli":

        def sample(gen: torch.Generator, S: int, dtype: torch.dtype) -> Tensor:
            keep = torch.rand(S, m_fn(), generator=gen, dtype=torch.float64) < p
            return (keep.to(torch.float64) / p - 1.0).to(dtype)

        return sample
    if dist == "gauss":
        return gaussian_sampler(m_fn, sigma)
    raise ConfigError(f"dist must be 'bernoulli' or 'gauss', got {dist!r}")


def label_noise(
    model_fn: Callable[..., Tensor], X: Tensor | None, y: Tensor, sigma: float, dist: str = "gauss"
) -> NoisyObjective:
    """Label noise on the squared loss: ``L̂ = (1/2n) Σ (f_i − y_i − η_i)²``, Var η_i = σ².

    Reg = ½ is constant: the regime is degenerate and the limit is deterministic on τ₂ = α²σ²k,
    dW/dτ₂ = −(1/(4n)) P_T ∇tr H (Σ = JJᵀ = H/n on Γ).
    """
    s = check_sigma(sigma)
    base = SquaredLoss(model_fn, X, y, name="squared")
    n = base.n
    if dist == "gauss":
        sampler = gaussian_sampler(lambda: n, s)
    elif dist == "rademacher":
        sampler = rademacher_sampler(lambda: n, s)
    else:
        raise ConfigError(f"label_noise dist must be 'gauss' or 'rademacher', got {dist!r}")

    def loss_hat(w: Tensor, eta: Tensor) -> Tensor:
        r = base.residual(w) - eta
        return 0.5 * (r**2).sum(-1) / n

    def jac(w: Tensor) -> Tensor:  # J = −(1/n) Dfᵀ
        return -batched_jacobian(base.predict, w).transpose(-1, -2) / n

    grad_hat = None
    if base.model_vjp is not None:
        def grad_hat(w: Tensor, eta: Tensor) -> Tensor:
            return base.model_vjp(w, (base.residual(w) - eta) / n)

    return NoisyObjective(
        loss_hat, base.d, n, s, sampler, base, eta_degree=2, name=f"label_noise[{dist}]",
        jacobian_fn=jac, grad_hat_fn=grad_hat, drift_hint=DriftHint("hessian_aligned", c=1.0 / n, trace=base.trace_gauss_newton),
        factory=lambda t: label_noise(model_fn, X, y, t, dist),
    )


def minibatch(
    per_sample_loss: SquaredLoss | Callable[[Tensor], Tensor], n: int, b: int, replace: bool = False,
    *, constraint: Callable[[Tensor], Tensor] | None = None,
) -> NoisyObjective:
    """Minibatch SGD as noise: ``L̂ = (1/n) Σ (1 + η_i) ℓ_i`` with 1 + η_i = (n/b)·(count of i in the batch).

    Without replacement σ² = n/b − 1, with replacement σ² = (n − 1)/b; η_i are correlated (C_ij = −1/(n−1)).
    Reg = 0; when every ℓ_i vanishes on Γ, J = 0 there and the limit is trivial. Pass a :class:`SquaredLoss`
    (its per-sample losses and residual constraint are used) or a callable ``(S,d) -> (S,n)``.
    """
    n, b = int(n), int(b)
    if not 1 <= b <= n:
        raise ConfigError(f"batch size b must be in [1, n={n}], got {b}")
    grad_hat = None
    if isinstance(per_sample_loss, SquaredLoss):
        sq = per_sample_loss
        ell, F, d = sq.per_sample, sq.residual, sq.d
        if sq.n != n:
            raise ConfigError(f"n={n} does not match the loss's {sq.n} samples")
        base: Loss = sq
        if sq.model_vjp is not None:
            def grad_hat(w: Tensor, eta: Tensor) -> Tensor:
                return sq.model_vjp(w, (1 + eta) * sq.residual(w) / n)
    else:
        ell, F, d = per_sample_loss, constraint, None
        base = Loss(lambda w: ell(w).mean(-1), d=d, constraint=F, name="mean per-sample")
    var = (n / b - 1.0) if not replace else (n - 1.0) / b
    s = math.sqrt(var)
    C = torch.full((n, n), -1.0 / (n - 1), dtype=torch.float64) if n > 1 else torch.ones(1, 1, dtype=torch.float64)
    C.fill_diagonal_(1.0)

    def sample(gen: torch.Generator, S: int, dtype: torch.dtype) -> Tensor:
        if replace:
            idx = torch.randint(0, n, (S, b), generator=gen)
            counts = torch.zeros(S, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(S, b, dtype=torch.float64))
        else:
            idx = torch.rand(S, n, generator=gen, dtype=torch.float64).argsort(dim=1)[:, :b]
            counts = torch.zeros(S, n, dtype=torch.float64).scatter_(1, idx, 1.0)
        return (counts * (n / b) - 1.0).to(dtype)

    def loss_hat(w: Tensor, eta: Tensor) -> Tensor:
        return ((1 + eta) * ell(w)).mean(-1)

    def jac(w: Tensor) -> Tensor:  # J = (1/n)[∇ℓ_1 … ∇ℓ_n]
        return batched_jacobian(ell, w).transpose(-1, -2) / n

    return NoisyObjective(
        loss_hat, d, n, s, sample, base, C=C, eta_degree=1, name=f"minibatch[b={b}]", jacobian_fn=jac,
        grad_hat_fn=grad_hat,
        info={"n": n, "b": b, "replace": replace},
    )


def dropout(
    model_fn: Callable[..., Tensor], X: Tensor, y: Tensor, units: int, *, p: float | None = None,
    sigma: float | None = None, dist: str = "bernoulli", mode: str = "per_example",
) -> NoisyObjective:
    """Dropout on ``units`` hidden units: unit j's output × (1 + η_j), squared loss.

    ``model_fn(w, X, gate)`` takes gate (S, n, units) (None = all ones). ``mode='per_example'`` draws a mask per
    example and unit (m = n·units), ``'shared'`` one per unit (m = units); both have the same Reg, only J
    differs. For a two-layer net Reg = (1/2n) Σ_i Σ_j a_j² φ(b_jᵀx_i)².
    """
    keep, s = _keep_sigma(p, sigma)
    if mode not in ("per_example", "shared"):
        raise ConfigError(f"dropout mode must be 'per_example' or 'shared', got {mode!r}")
    units = int(units)
    base = SquaredLoss(lambda w, Xin: model_fn(w, Xin, None), X, y, name="squared")
    n = base.n
    m = n * units if mode == "per_example" else units
    sampler = _mask_sampler(lambda: m, keep, s, dist)
    yv = base.y

    def gate_of(eta: Tensor) -> Tensor:
        if mode == "per_example":
            return 1 + eta.reshape(eta.shape[0], n, units)
        return (1 + eta)[:, None, :].expand(eta.shape[0], n, units)

    def loss_hat(w: Tensor, eta: Tensor) -> Tensor:
        r = model_fn(w, X, gate_of(eta)).reshape(w.shape[0], n) - yv.to(w.dtype)
        return 0.5 * (r**2).sum(-1) / n

    return NoisyObjective(
        loss_hat, base.d, m, s, sampler, base, eta_degree=2, name=f"dropout[{mode},{dist}]",
        factory=lambda t: dropout(model_fn, X, y, units, sigma=t, dist=dist, mode=mode),
        info={"units": units, "mode": mode, "keep": keep},
    )


def dropconnect(
    loss: Loss | Callable[[Tensor], Tensor], subset: Sequence[int] | None = None, *, p: float | None = None,
    sigma: float | None = None, dist: str = "bernoulli", d: int | None = None, eta_degree: int | None = None,
) -> NoisyObjective:
    """DropConnect on the weights in ``subset`` (default: all): ``L̂ = L(w ⊙ (1 + η))``.

    Reg = ½ Σ_{i∈S} w_i² ∂²_ii L(w) everywhere. ``eta_degree`` may be declared (e.g. 4 for the product toy)
    so that :func:`classify` can warn about competing O(ασ⁴) terms in the degenerate case.
    """
    keep, s = _keep_sigma(p, sigma)
    base = as_loss(loss, d)
    idx = None if subset is None else torch.as_tensor(list(subset), dtype=torch.int64)
    m = None if idx is None else int(idx.numel())
    if idx is not None and base.d is not None and (idx.numel() == 0 or int(idx.max()) >= base.d or int(idx.min()) < 0):
        raise ConfigError(f"dropconnect subset must index into 0..{base.d - 1}, got {list(subset or [])}")
    obj_ref: list[NoisyObjective] = []
    sampler = _mask_sampler(lambda: obj_ref[0]._need_m(), keep, s, dist)

    def full(eta: Tensor, w: Tensor) -> Tensor:
        if idx is None:
            return eta
        return torch.zeros_like(w).index_add(1, idx, eta)

    def loss_hat(w: Tensor, eta: Tensor) -> Tensor:
        return base(w * (1 + full(eta, w)))

    def grad_hat(w: Tensor, eta: Tensor) -> Tensor:
        scale = 1 + full(eta, w)
        return scale * base.gradient(w * scale)

    obj = NoisyObjective(
        loss_hat, base.d, m if idx is not None else base.d, s, sampler, base, eta_degree=eta_degree,
        name=f"dropconnect[{dist}]", grad_hat_fn=grad_hat, m_from_d=(lambda dd: dd) if idx is None else None,
        factory=lambda t: dropconnect(loss, subset, sigma=t, dist=dist, d=d, eta_degree=eta_degree),
        info={"keep": keep},
    )
    obj_ref.append(obj)
    return obj


def sgld(
    loss: Loss | Callable[[Tensor], Tensor], *, sigma: float | None = None, beta: float | None = None,
    alpha: float | None = None, d: int | None = None,
) -> NoisyObjective:
    """SGLD / uncorrelated perturbed GD: ``w⁺ = w − α∇L + αη`` (``L̂ = L − ⟨η, w⟩``), η ~ N(0, σ²I).

    Give ``sigma`` or the inverse temperature ``beta`` with ``alpha`` (σ² = 2/(αβ)). J = −I, Σ = I: the
    degenerate SDE on Γ whose stationary law is ∝ det₊(H)^{-1/2} dvol_Γ.
    """
    if sigma is None:
        if beta is None or alpha is None:
            raise ConfigError("sgld needs sigma=, or beta= together with alpha=")
        if beta <= 0 or alpha <= 0:
            raise ConfigError(f"sgld beta and alpha must be > 0, got beta={beta}, alpha={alpha}")
        sigma = math.sqrt(2.0 / (alpha * beta))
    elif beta is not None:
        raise ConfigError("sgld: give sigma= or beta=, not both")
    s = check_sigma(sigma)
    base = as_loss(loss, d)
    obj_ref: list[NoisyObjective] = []
    sampler = gaussian_sampler(lambda: obj_ref[0]._need_m(), s)

    def loss_hat(w: Tensor, eta: Tensor) -> Tensor:
        return base(w) - (eta * w).sum(-1)

    def grad_hat(w: Tensor, eta: Tensor) -> Tensor:
        return base.gradient(w) - eta

    def jac(w: Tensor) -> Tensor:
        return -torch.eye(w.shape[1], dtype=w.dtype).expand(w.shape[0], -1, -1).clone()

    obj = NoisyObjective(
        loss_hat, base.d, base.d, s, sampler, base, eta_degree=1, name="sgld", grad_hat_fn=grad_hat,
        jacobian_fn=jac, drift_hint=DriftHint("isotropic"), m_from_d=lambda dd: dd,
        factory=lambda t: sgld(loss, sigma=t, d=d),
    )
    obj_ref.append(obj)
    return obj


def weight_noise(loss: Loss | Callable[[Tensor], Tensor], sigma: float, *, d: int | None = None,
                 _report: str | None = None) -> NoisyObjective:
    """Gaussian weight noise ``L̂ = L(w + η)``, η ~ N(0, σ²I): Reg = ½ tr ∇²L, J = ∇²L, non-degenerate
    limit dW/dτ₁ = −½ P_T ∇tr H on τ₁ = ασ²k."""
    s = check_sigma(sigma)
    base = as_loss(loss, d)
    obj_ref: list[NoisyObjective] = []
    sampler = gaussian_sampler(lambda: obj_ref[0]._need_m(), s)

    def loss_hat(w: Tensor, eta: Tensor) -> Tensor:
        return base(w + eta)

    def grad_hat(w: Tensor, eta: Tensor) -> Tensor:
        return base.gradient(w + eta)

    report_fn = None
    if _report == "w":
        def report_fn(z: Tensor, xi: Tensor) -> Tensor:
            return z + xi

    obj = NoisyObjective(
        loss_hat, base.d, base.d, s, sampler, base, name="weight_noise" if _report is None else f"anti_pgd[{_report}]",
        grad_hat_fn=grad_hat, jacobian_fn=lambda w: batched_hessian(base.fn, w), m_from_d=lambda dd: dd,
        report_fn=report_fn, factory=lambda t: weight_noise(loss, t, d=d, _report=_report),
    )
    obj_ref.append(obj)
    return obj


def anti_pgd(loss: Loss | Callable[[Tensor], Tensor], sigma: float, report: str = "w", *,
             d: int | None = None) -> NoisyObjective:
    """Anti-correlated perturbed GD ``w_{k+1} = w_k − α∇L(w_k) + ξ_{k+1} − ξ_k``, simulated as weight noise
    in z = w − ξ (same limit: ½ tr H on the fast scale). ``report='w'`` reports w = z + ξ_k, ``'z'`` reports z."""
    if report not in ("w", "z"):
        raise ConfigError(f"anti_pgd report must be 'w' or 'z', got {report!r}")
    return weight_noise(loss, sigma, d=d, _report=report)
