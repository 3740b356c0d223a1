"""Losses with a zero-loss set and the noisy objective ``L̂(w, η)`` that noise models build on them.

Shapes: parameters ``w`` are ``(S, d)`` (S independent chains), noise ``η`` is ``(S, m)``, losses are ``(S,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dicelab.errors import ConfigError
from dicelab.theory._autodiff import batched_grad

__all__ = ["Loss", "SquaredLoss", "NoisyObjective", "make_objective", "as_loss"]


class Loss:
    """A deterministic loss ``L: (S,d) -> (S,)``, optionally with constraints F, ``Γ = {F = 0}``.

    ``constraint(w) -> (S, M)`` must vanish exactly on the zero-loss set with full-rank Jacobian there;
    without it the manifold tools fall back to the rank of ∇²L. ``grad`` and ``constraint_jacobian`` are optional
    closed forms of ∇L (S, d) and DF (S, M, d): they only make simulation and retraction cheaper.
    """

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        d: int | None = None,
        constraint: Callable[[Tensor], Tensor] | None = None,
        name: str = "loss",
        grad: Callable[[Tensor], Tensor] | None = None,
        constraint_jacobian: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.fn = fn
        self.d = d
        self._constraint = constraint
        self.name = name
        self._grad = grad
        self._constraint_jacobian = constraint_jacobian

    def __call__(self, w: Tensor) -> Tensor:
        return self.fn(w)

    def gradient(self, w: Tensor) -> Tensor:
        """∇L per chain: the closed form when one was given (simulation hot path), else autograd."""
        if self._grad is not None:
            return self._grad(w)
        with torch.enable_grad():
            x = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.fn(x).sum(), x)
        return g

    def constraint(self, w: Tensor) -> Tensor | None:
        return None if self._constraint is None else self._constraint(w)

    def constraint_jacobian(self, w: Tensor) -> Tensor | None:
        """DF (S, M, d) in closed form when the loss knows it (None: the manifold tools use autograd)."""
        return None if self._constraint_jacobian is None else self._constraint_jacobian(w)

    @property
    def has_constraint(self) -> bool:
        return self._constraint is not None

    def trace_hessian(self, w: Tensor) -> Tensor:
        """tr ∇²L per chain by d double-backward passes (differentiable: the graph is kept)."""
        from dicelab.theory._autodiff import hessian_autograd

        x = w if w.requires_grad else w.detach().requires_grad_(True)
        return hessian_autograd(self.fn, x, create_graph=True).diagonal(dim1=-2, dim2=-1).sum(-1)


class SquaredLoss(Loss):
    """``L = (1/2n) Σ_i (f_i(w) − y_i)²`` for ``model_fn(w, X) -> (S, n)``; F = residual, so Γ = {f = y}.

    ``model_fn`` may take a third argument ``gate`` (S, n, units) when the model supports dropout. A model may
    carry a closed-form vector-Jacobian product ``model_fn.vjp(w, g) = Dfᵀg`` ((S,n) → (S,d)); the built-in
    noise models then step without autograd (it dominates the cost of a step on small problems).
    """

    def __init__(self, model_fn: Callable[..., Tensor], X: Tensor | None, y: Tensor, d: int | None = None,
                 name: str = "squared", model_vjp: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        self.model_fn = model_fn
        self.X = X
        self.y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        self.n = int(self.y.numel())
        self.model_vjp = model_vjp if model_vjp is not None else getattr(model_fn, "vjp", None)
        grad = None
        if self.model_vjp is not None:
            def grad(w: Tensor) -> Tensor:
                return self.model_vjp(w, self.residual(w) / self.n)
        super().__init__(self._loss, d=d, constraint=self.residual, name=name, grad=grad)

    def predict(self, w: Tensor) -> Tensor:
        out = self.model_fn(w, self.X)
        return out.reshape(w.shape[0], self.n)

    def residual(self, w: Tensor) -> Tensor:
        return self.predict(w) - self.y.to(w.dtype)

    def per_sample(self, w: Tensor) -> Tensor:
        """ℓ_i = ½ (f_i − y_i)², shape (S, n); L is their mean."""
        return 0.5 * self.residual(w) ** 2

    def _loss(self, w: Tensor) -> Tensor:
        r = self.residual(w)
        return 0.5 * (r**2).sum(-1) / self.n

    def jacobian(self, w: Tensor) -> Tensor:
        """Df per chain, (S, n, d) (= DF of the residual constraint): closed form through ``model_vjp`` when
        available (differentiable by autograd), else n backward passes."""
        S, d = w.shape
        n = self.n
        if self.model_vjp is not None:
            Wr = w.unsqueeze(1).expand(S, n, d).reshape(S * n, d)
            G = torch.eye(n, dtype=w.dtype).expand(S, n, n).reshape(S * n, n)
            return self.model_vjp(Wr, G).reshape(S, n, d)
        with torch.enable_grad():
            x = w if w.requires_grad else w.detach().requires_grad_(True)
            f = self.predict(x)
            rows = [torch.autograd.grad(f[:, i].sum(), x, create_graph=w.requires_grad, retain_graph=True)[0]
                    for i in range(n)]
        return torch.stack(rows, dim=1)

    def constraint_jacobian(self, w: Tensor) -> Tensor | None:
        return self.jacobian(w) if self.model_vjp is not None else super().constraint_jacobian(w)

    def trace_gauss_newton(self, w: Tensor) -> Tensor:
        """tr G = (1/n) Σ_i |∇f_i|²: equals tr ∇²L on Γ and has the same tangential gradient there (cheaper).

        Plain autograd with ``create_graph`` (n backward passes), so the result can be differentiated again.
        """
        with torch.enable_grad():
            x = w if w.requires_grad else w.detach().requires_grad_(True)
            return (self.jacobian(x) ** 2).sum(dim=(-1, -2)) / self.n


def as_loss(loss: Loss | Callable[[Tensor], Tensor], d: int | None = None) -> Loss:
    """Wrap a plain callable as a :class:`Loss` (no constraint)."""
    if isinstance(loss, Loss):
        if d is not None and loss.d is None:
            loss.d = d
        return loss
    if not callable(loss):
        raise ConfigError(f"loss must be a callable (S,d)->(S,) or a Loss, got {type(loss).__name__}")
    return Loss(loss, d=d)


Sampler = Callable[[torch.Generator, int, torch.dtype], Tensor]


@dataclass
class DriftHint:
    """Closed-form shortcut for the degenerate drift, declared by a noise model.

    kind ``"hessian_aligned"``: Σ = J C Jᵀ = c·H on Γ, so b = −(c/4) P_T ∇tr H (``trace`` gives tr H, or a
    function with the same tangential gradient on Γ); kind ``"isotropic"``: Σ = I.
    """

    kind: str
    c: float = 1.0
    trace: Callable[[Tensor], Tensor] | None = None


@dataclass
class NoisyObjective:
    """``L̂(w, η)`` with ``L̂(w, 0) = L(w)``; noise ``η`` i.i.d. per step, mean 0, covariance σ²C.

    Build one with a constructor of :mod:`dicelab.theory.noise` or with :func:`make_objective`.
    ``sample_eta(gen, S)`` returns the actual noise (covariance σ²C), not unit draws.
    """

    loss_hat_fn: Callable[[Tensor, Tensor], Tensor]
    d: int | None
    m: int | None
    sigma: float
    sampler: Sampler
    base: Loss
    C: Tensor | None = None
    eta_degree: int | None = None
    name: str = "custom"
    grad_hat_fn: Callable[[Tensor, Tensor], Tensor] | None = None
    jacobian_fn: Callable[[Tensor], Tensor] | None = None
    report_fn: Callable[[Tensor, Tensor], Tensor] | None = None
    drift_hint: DriftHint | None = None
    m_from_d: Callable[[int], int] | None = None
    factory: Callable[[float], NoisyObjective] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    # -- dimensions ---------------------------------------------------------------------------
    def bind(self, w: Tensor) -> NoisyObjective:
        """Fix d (and m, when it follows d) from a parameter tensor; checks the shape otherwise."""
        dw = int(w.shape[-1])
        if self.d is None:
            self.d = dw
            if self.base.d is None:
                self.base.d = dw
        elif dw != self.d:
            raise ConfigError(f"parameter dimension {dw} does not match the objective's d = {self.d}")
        if self.m is None and self.m_from_d is not None:
            self.m = self.m_from_d(self.d)
        return self

    def _need_m(self) -> int:
        if self.m is None:
            raise ConfigError(f"noise dimension of objective '{self.name}' unknown: pass d= to the constructor")
        return self.m

    # -- the objective --------------------------------------------------------------------------
    def loss(self, w: Tensor) -> Tensor:
        """L(w) = L̂(w, 0), shape (S,)."""
        return self.base(w)

    def loss_hat(self, w: Tensor, eta: Tensor) -> Tensor:
        """L̂(w, η), shape (S,)."""
        return self.loss_hat_fn(w, eta)

    def grad_loss(self, w: Tensor) -> Tensor:
        """∇L(w) per chain, (S, d)."""
        return self.base.gradient(w)

    def grad_hat(self, w: Tensor, eta: Tensor) -> Tensor:
        """∇_w L̂(w, η) per chain; σ = 0 short-circuits to ∇L (off means off, bit-identical to GD)."""
        if self.sigma == 0.0:
            return self.grad_loss(w)
        if self.grad_hat_fn is not None:
            return self.grad_hat_fn(w, eta)
        with torch.enable_grad():
            x = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.loss_hat_fn(x, eta).sum(), x)
        return g

    def grad_hat_functional(self, w: Tensor, eta: Tensor) -> Tensor:
        """∇_w L̂ written with torch.func (composable with jvp/vmap), used for J and Reg derivatives."""
        return batched_grad(lambda x: self.loss_hat_fn(x, eta))(w)

    def sample_eta(self, gen: torch.Generator, S: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """S draws of η, shape (S, m); zeros when σ = 0 (the generator is not advanced)."""
        m = self._need_m()
        if self.sigma == 0.0:
            return torch.zeros(S, m, dtype=dtype)
        return self.sampler(gen, S, dtype)

    def constraint(self, w: Tensor) -> Tensor | None:
        """F(w) with Γ = {F = 0}, shape (S, M), or None when Γ is implicit."""
        return self.base.constraint(w)

    def report(self, state: Tensor, eta_next: Tensor) -> Tensor:
        """The reported parameter for a simulated state (Anti-PGD reports w = z + ξ)."""
        if self.report_fn is None:
            return state
        return self.report_fn(state, eta_next)

    def with_sigma(self, sigma: float) -> NoisyObjective:
        """The same noise model at another σ (used by σ sweeps)."""
        if self.factory is None:
            raise ConfigError(f"objective '{self.name}' cannot change sigma (built without a factory)")
        new = self.factory(float(sigma))
        if self.d is not None:
            new.d = self.d
            if new.m is None and new.m_from_d is not None:
                new.m = new.m_from_d(self.d)
        return new

    def __repr__(self) -> str:
        return f"NoisyObjective({self.name}, d={self.d}, m={self.m}, sigma={self.sigma:g})"


def gaussian_sampler(m_fn: Callable[[], int], sigma: float, C: Tensor | None = None) -> Sampler:
    """η = σ C^{1/2} ξ, ξ ~ N(0, I)."""
    root = None
    if C is not None:
        evals, evecs = torch.linalg.eigh(C.to(torch.float64))
        root = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T

    def sample(gen: torch.Generator, S: int, dtype: torch.dtype) -> Tensor:
        xi = torch.randn(S, m_fn(), generator=gen, dtype=torch.float64)
        if root is not None:
            xi = xi @ root.T
        return (sigma * xi).to(dtype)

    return sample


def rademacher_sampler(m_fn: Callable[[], int], sigma: float) -> Sampler:
    """η_i = ±σ with probability ½ each."""

    def sample(gen: torch.Generator, S: int, dtype: torch.dtype) -> Tensor:
        bits = torch.randint(0, 2, (S, m_fn()), generator=gen, dtype=torch.int64)
        return (sigma * (2.0 * bits - 1.0)).to(dtype)

    return sample


def check_sigma(sigma: Any, what: str = "sigma") -> float:
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {sigma!r}") from None
    if not math.isfinite(s) or s < 0:
        raise ConfigError(f"{what} must be finite and >= 0, got {sigma!r}")
    return s


def make_objective(
    loss_hat: Callable[[Tensor, Tensor], Tensor],
    d: int,
    m: int,
    sigma: float,
    *,
    sampler: Sampler | None = None,
    dist: str = "gauss",
    C: Tensor | None = None,
    loss: Loss | Callable[[Tensor], Tensor] | None = None,
    constraint: Callable[[Tensor], Tensor] | None = None,
    eta_degree: int | None = None,
    name: str = "custom",
) -> NoisyObjective:
    """A custom noisy objective from ``loss_hat(w (S,d), eta (S,m)) -> (S,)``.

    ``sampler(gen, S, dtype) -> (S, m)`` must return mean-zero noise with covariance σ²C (default: Gaussian
    or Rademacher of scale σ, correlated by C). ``constraint(w) -> (S, M)`` defines Γ = {F = 0} when known;
    ``loss`` defaults to ``loss_hat(w, 0)``.

    >>> obj = make_objective(lambda w, e: 0.5 * (w[:, 0] * w[:, 1] * (1 + e[:, 0]) - 1) ** 2, d=2, m=1, sigma=0.1,
    ...                      constraint=lambda w: w[:, :1] * w[:, 1:2] - 1)
    """
    d, m = int(d), int(m)
    if d <= 0 or m <= 0:
        raise ConfigError(f"d and m must be positive, got d={d}, m={m}")
    s = check_sigma(sigma)
    if C is not None:
        C = torch.as_tensor(C, dtype=torch.float64)
        if C.shape != (m, m):
            raise ConfigError(f"C must be ({m}, {m}), got {tuple(C.shape)}")
    if loss is None:
        base = Loss(lambda w: loss_hat(w, torch.zeros(w.shape[0], m, dtype=w.dtype)), d=d, constraint=constraint)
    else:
        base = as_loss(loss, d)
        if constraint is not None:
            base = Loss(base.fn, d=d, constraint=constraint, name=base.name)
    custom_sampler = sampler is not None
    if sampler is None:
        if dist == "gauss":
            sampler = gaussian_sampler(lambda: m, s, C)
        elif dist == "rademacher":
            if C is not None:
                raise ConfigError("dist='rademacher' with a correlation C needs a custom sampler")
            sampler = rademacher_sampler(lambda: m, s)
        else:
            raise ConfigError(f"dist must be 'gauss' or 'rademacher', got {dist!r}")

    def factory(new_sigma: float) -> NoisyObjective:
        if custom_sampler:
            raise ConfigError(f"objective '{name}' has a custom sampler: rebuild it to change sigma")
        return make_objective(loss_hat, d, m, new_sigma, dist=dist, C=C, loss=loss, constraint=constraint,
                              eta_degree=eta_degree, name=name)

    return NoisyObjective(loss_hat, d, m, s, sampler, base, C=C, eta_degree=eta_degree, name=name,
                          factory=factory)
