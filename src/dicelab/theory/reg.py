"""The implicit regulariser Reg(w) = ½ Δ_η L̂(w, 0), its gradient, the noise Jacobian, and ``classify``."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.func import grad, jvp, vjp, vmap

from dicelab.errors import ConfigError
from dicelab.seeding import generator
from dicelab.theory.errors import TheoryWarning
from dicelab.theory.manifold import ZeroLossSet, as_batch
from dicelab.theory.objective import NoisyObjective

__all__ = ["RegEstimate", "reg", "grad_reg", "noise_jacobian", "JacobianOp", "classify", "Classification"]

_CHUNK = 256
_EXACT_MAX_M = 1024


@dataclass
class RegEstimate:
    """Reg per chain, (S,), with its Monte-Carlo standard error (zeros for deterministic methods)."""

    value: Tensor
    se: Tensor
    method: str

    def __repr__(self) -> str:
        return f"RegEstimate({self.method}: {self.value.tolist()} ± {self.se.tolist()})"


def _resolve(obj: NoisyObjective, w: Tensor, method: str) -> str:
    obj.bind(w)
    if method == "auto":
        return "exact" if obj._need_m() <= _EXACT_MAX_M else "hutchinson"
    if method not in ("exact", "fd", "hutchinson"):
        raise ConfigError(f"reg method must be 'auto', 'exact', 'fd' or 'hutchinson', got {method!r}")
    return method


def _eta_grad(obj: NoisyObjective, w: Tensor) -> Callable[[Tensor], Tensor]:
    """η ↦ ∇_η Σ_s L̂(w_s, η_s): per-chain η-gradients (chains are independent)."""
    return grad(lambda e: obj.loss_hat_fn(w, e).sum())


def _C_root(C: Tensor) -> Tensor:
    ev, V = torch.linalg.eigh(C)
    return V @ torch.diag(ev.clamp_min(0).sqrt()) @ V.T


def _reg_exact(obj: NoisyObjective, w: Tensor, C: Tensor | None) -> Tensor:
    S, m = w.shape[0], obj._need_m()
    zero = torch.zeros(S, m, dtype=w.dtype)
    ge = _eta_grad(obj, w)
    eye = torch.eye(m, dtype=w.dtype)

    if C is None:
        def diag_entry(e: Tensor) -> Tensor:  # e: (m,) basis vector, replicated over chains
            E = e.expand(S, m)
            return (jvp(ge, (zero,), (E,))[1] * E).sum(-1)

        return 0.5 * vmap(diag_entry, chunk_size=_CHUNK)(eye).sum(0)

    def column(e: Tensor) -> Tensor:
        return jvp(ge, (zero,), (e.expand(S, m),))[1]

    Heta = vmap(column, chunk_size=_CHUNK)(eye).permute(1, 2, 0)  # (S, m, m)
    return 0.5 * (Heta * C.to(w.dtype)).sum(dim=(-1, -2))


_AUTOGRAD_MAX_M = 32


def _reg_exact_autograd(obj: NoisyObjective, w: Tensor, C: Tensor | None, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Exact Reg (and optionally ∇_w Reg) by plain double/triple backward passes: for small m this avoids the
    torch.func dispatch overhead that dominates the limit integrators (one call per RK4 stage)."""
    S, m = w.shape[0], obj._need_m()
    with torch.enable_grad():
        x = w.detach().requires_grad_(with_grad)
        e = torch.zeros(S, m, dtype=w.dtype, requires_grad=True)
        (ge,) = torch.autograd.grad(obj.loss_hat_fn(x, e).sum(), e, create_graph=True)
        rows = []
        for i in range(m):
            if ge.grad_fn is None:  # L̂ linear in η: the η-Hessian vanishes
                rows.append(torch.zeros(S, m, dtype=w.dtype))
                continue
            (r,) = torch.autograd.grad(ge[:, i].sum(), e, create_graph=with_grad, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros(S, m, dtype=w.dtype) if r is None else r)
        He = torch.stack(rows, dim=1)  # (S, m, m)
        value = 0.5 * (He.diagonal(dim1=-2, dim2=-1).sum(-1) if C is None else (He * C.to(w.dtype)).sum((-1, -2)))
        grad_w = None
        if with_grad:
            if value.requires_grad:
                (grad_w,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
            grad_w = torch.zeros_like(w) if grad_w is None else grad_w
    return value.detach(), grad_w


def _reg_fd(obj: NoisyObjective, w: Tensor, C: Tensor | None, eps: float) -> Tensor:
    S, d = w.shape
    m = obj._need_m()
    dirs = torch.eye(m, dtype=w.dtype) if C is None else _C_root(C).T.to(w.dtype)  # rows: directions
    zero = torch.zeros(S, m, dtype=w.dtype)
    base = obj.loss_hat_fn(w, zero)
    total = torch.zeros(S, dtype=w.dtype)
    k = max(1, 4096 // max(S, 1))
    for start in range(0, m, k):  # stack directions into the chain dimension: L̂ sees independent chains
        D = dirs[start:start + k]
        nd = D.shape[0]
        W = w.repeat(nd, 1)
        E = (eps * D)[:, None, :].expand(nd, S, m).reshape(nd * S, m)
        lp = obj.loss_hat_fn(W, E).reshape(nd, S)
        lm = obj.loss_hat_fn(W, -E).reshape(nd, S)
        total = total + ((lp - 2 * base + lm) / eps**2).sum(0)
    return 0.5 * total


def _probes(obj: NoisyObjective, S: int, probes: int, C: Tensor | None, gen: torch.Generator | None,
            dtype: torch.dtype) -> Tensor:
    m = obj._need_m()
    g = gen if gen is not None else generator(0, "theory.probe")
    z = torch.randint(0, 2, (probes, S, m), generator=g).to(dtype) * 2 - 1
    if C is not None:
        z = z @ _C_root(C).T.to(dtype)
    return z


def _reg_hutchinson_samples(obj: NoisyObjective, w: Tensor, z: Tensor) -> Tensor:
    """½ zᵀ∇²_ηL̂ z per probe and chain, (probes, S)."""
    S, m = w.shape[0], z.shape[-1]
    zero = torch.zeros(S, m, dtype=w.dtype)
    ge = _eta_grad(obj, w)

    def quad(zz: Tensor) -> Tensor:
        return (jvp(ge, (zero,), (zz,))[1] * zz).sum(-1)

    return 0.5 * vmap(quad, chunk_size=_CHUNK)(z)


def reg(
    obj: NoisyObjective, w: Tensor, method: str = "auto", C: Tensor | None = None, eps: float = 1e-4,
    probes: int = 256, gen: torch.Generator | None = None,
) -> RegEstimate:
    """Reg(w) = ½ tr(C ∇²_η L̂(w, 0)) per chain (C defaults to the objective's own C, else I).

    ``"exact"``: m forward-over-reverse HVPs in η (vmapped in chunks of 256). ``"fd"``: central second
    differences with step ``eps`` (error O(ε²) + round-off). ``"hutchinson"``: ½ mean zᵀ∇²_ηL̂ z over
    Rademacher probes z (z = C^{1/2}r when correlated), from generator ``theory.probe`` unless ``gen`` given.
    ``"auto"``: exact for m ≤ 1024, else Hutchinson.
    """
    w = as_batch(w)
    method = _resolve(obj, w, method)
    C = obj.C if C is None else torch.as_tensor(C, dtype=w.dtype)
    zeros = torch.zeros(w.shape[0], dtype=w.dtype)
    if method == "exact":
        if obj._need_m() <= _AUTOGRAD_MAX_M:
            return RegEstimate(_reg_exact_autograd(obj, w, C, False)[0], zeros, method)
        return RegEstimate(_reg_exact(obj, w, C), zeros, method)
    if method == "fd":
        return RegEstimate(_reg_fd(obj, w, C, eps), zeros, method)
    z = _probes(obj, w.shape[0], probes, C, gen, w.dtype)
    samples = _reg_hutchinson_samples(obj, w, z)
    se = samples.std(0, unbiased=True) / math.sqrt(probes) if probes > 1 else zeros
    return RegEstimate(samples.mean(0), se, method)


def grad_reg(
    obj: NoisyObjective, w: Tensor, method: str = "auto", *, diff: str = "autograd", h: float = 1e-5,
    C: Tensor | None = None, eps: float = 1e-4, probes: int = 256, gen: torch.Generator | None = None,
) -> Tensor:
    """∇Reg(w) per chain, (S, d): autograd through the chosen estimator (Hutchinson with the same probes),
    or ``diff="central"`` differences of :func:`reg` in w with step h."""
    w = as_batch(w)
    method = _resolve(obj, w, method)
    C = obj.C if C is None else torch.as_tensor(C, dtype=w.dtype)
    if diff == "central":
        S, d = w.shape
        out = torch.empty_like(w)
        for j in range(d):
            e = torch.zeros(d, dtype=w.dtype)
            e[j] = h
            kw = {"gen": None if gen is None else _clone_gen(gen)}
            rp = reg(obj, w + e, method, C, eps, probes, **kw).value
            kw = {"gen": None if gen is None else _clone_gen(gen)}
            rm = reg(obj, w - e, method, C, eps, probes, **kw).value
            out[:, j] = (rp - rm) / (2 * h)
        return out
    if diff != "autograd":
        raise ConfigError(f"diff must be 'autograd' or 'central', got {diff!r}")
    if method == "exact":
        if obj._need_m() <= _AUTOGRAD_MAX_M:
            return _reg_exact_autograd(obj, w, C, True)[1]
        fn = lambda x: _reg_exact(obj, x, C)  # noqa: E731
    elif method == "fd":
        fn = lambda x: _reg_fd(obj, x, C, eps)  # noqa: E731
    else:
        z = _probes(obj, w.shape[0], probes, C, gen, w.dtype)
        fn = lambda x: _reg_hutchinson_samples(obj, x, z).mean(0)  # noqa: E731
    return grad(lambda x: fn(x).sum())(w)


def _clone_gen(g: torch.Generator) -> torch.Generator:
    c = torch.Generator()
    c.set_state(g.get_state())
    return c


class JacobianOp:
    """J(w) = ∇_η∇_w L̂(w, 0) as an operator: ``mv(η) = Jη`` (S,d), ``rmv(v) = Jᵀv`` (S,m)."""

    def __init__(self, obj: NoisyObjective, w: Tensor) -> None:
        self.obj, self.w = obj, w
        self.zero = torch.zeros(w.shape[0], obj._need_m(), dtype=w.dtype)

    def mv(self, eta: Tensor) -> Tensor:
        return jvp(lambda e: self.obj.grad_hat_functional(self.w, e), (self.zero,), (eta,))[1]

    def rmv(self, v: Tensor) -> Tensor:
        _, f = vjp(lambda e: self.obj.grad_hat_functional(self.w, e), self.zero)
        return f(v)[0]


def noise_jacobian(obj: NoisyObjective, w: Tensor, dense: bool = True) -> Tensor | JacobianOp:
    """J(w) per chain as (S, d, m) (closed form when the noise model has one), or a :class:`JacobianOp`."""
    w = as_batch(w)
    obj.bind(w)
    if not dense:
        return JacobianOp(obj, w)
    if obj.jacobian_fn is not None:
        return obj.jacobian_fn(w)
    op = JacobianOp(obj, w)
    S, m = w.shape[0], obj._need_m()
    eye = torch.eye(m, dtype=w.dtype)
    cols = vmap(lambda e: op.mv(e.expand(S, m)), chunk_size=_CHUNK)(eye)  # (m, S, d)
    return cols.permute(1, 2, 0)


@dataclass
class Classification:
    """Which slow regime applies near w, its time variable, and the validity numbers behind it."""

    regime: str  # "non-degenerate" | "degenerate" | "trivial"
    time_variable: str  # "tau1 = alpha*sigma^2*k" | "tau2 = alpha^2*sigma^2*k" | "none"
    steps_per_unit_tau: float | None
    lam_min_plus: float
    lam_max: float
    sigma2_over_lam: float
    max_tangent_grad_reg: float
    max_grad_reg: float
    max_jacobian: float
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        spu = "n/a" if self.steps_per_unit_tau is None else f"{self.steps_per_unit_tau:.4g}"
        return (
            f"{self.regime} ({self.time_variable}); steps per unit tau: {spu}; lambda+_min={self.lam_min_plus:.4g}, "
            f"lambda_max={self.lam_max:.4g}, sigma^2/lambda+_min={self.sigma2_over_lam:.3g}; "
            f"max|P_T grad Reg|={self.max_tangent_grad_reg:.2e}"
            + ("".join(f"\n  warning: {m}" for m in self.warnings))
        )


def classify(obj: NoisyObjective, w: Tensor, alpha: float | None = None, n_points: int = 16,
             seed: int = 0) -> Classification:
    """Decide the slow regime near w (spec §5): retract w and ``n_points`` perturbations (scale 0.1‖w‖) onto Γ;
    degenerate iff max‖P_T∇Reg‖ ≤ 1e-8·(1 + max‖∇Reg‖); trivial if also ‖J‖ ≤ 1e-8 there.

    Warns (:class:`TheoryWarning`) on σ²/λ⁺_min > 0.05 (non-degenerate), αλ_max ≥ 2, and η-degree > 2
    in the degenerate case.
    """
    w = as_batch(w)[:1]
    obj.bind(w)
    Z = ZeroLossSet(obj)
    g = generator(seed, "theory.classify")
    d = w.shape[1]
    scale = 0.1 * float(w.norm()) / math.sqrt(d)
    pts = torch.cat([w, w + scale * torch.randn(n_points, d, generator=g, dtype=w.dtype)])
    pts, res, _ = Z.retract_report(pts)
    ok = res <= 1e-12
    if not bool(ok[0]):
        pts = Z.retract(pts[:1])  # raises with a clear message if even w itself cannot be retracted
        ok = torch.ones(1, dtype=torch.bool)
    pts = pts[ok]
    gr = grad_reg(obj, pts)
    PT = Z.tangent_projector(pts)
    tang = (PT @ gr[..., None])[..., 0].norm(dim=-1)
    max_t, max_g = float(tang.max()), float(gr.norm(dim=-1).max())
    degenerate = max_t <= 1e-8 * (1 + max_g)
    J = noise_jacobian(obj, pts)
    max_J = float(J.flatten(1).norm(dim=-1).max())
    regime = "non-degenerate" if not degenerate else ("trivial" if max_J <= 1e-8 else "degenerate")
    spec = Z.spectrum(pts[:1])
    lmin, lmax = float(spec.lam_min_plus[0]), float(spec.lam_max.max())
    s2 = obj.sigma**2
    msgs: list[str] = []
    if regime == "non-degenerate" and s2 / lmin > 0.05:
        msgs.append(f"sigma^2/lambda+_min = {s2 / lmin:.3g} > 0.05: the fast contraction does not dominate "
                    f"(limit error O(sigma^2)); lower sigma")
    if alpha is not None and alpha * lmax >= 2:
        msgs.append(f"alpha*lambda_max = {alpha * lmax:.3g} >= 2: gradient descent is unstable; lower alpha")
    if regime == "degenerate" and obj.eta_degree is not None and obj.eta_degree > 2:
        msgs.append(f"noise enters L_hat with degree {obj.eta_degree} > 2: O(alpha*sigma^4) tangential terms compete "
                    "with the O(alpha^2*sigma^2) dynamics unless sigma^2 << alpha or they are constant along Gamma")
    for msg in msgs:
        warnings.warn(msg, TheoryWarning, stacklevel=2)
    if regime == "non-degenerate":
        tv, spu = "tau1 = alpha*sigma^2*k", (None if alpha is None or s2 == 0 else 1 / (alpha * s2))
    elif regime == "degenerate":
        tv, spu = "tau2 = alpha^2*sigma^2*k", (None if alpha is None or s2 == 0 else 1 / (alpha**2 * s2))
    else:
        tv, spu = "none", None
    return Classification(regime, tv, spu, lmin, lmax, s2 / lmin, max_t, max_g, max_J, msgs)
