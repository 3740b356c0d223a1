"""Measured versus predicted spread of the parameters along the top Hessian directions (spec 06 §7).

Two readings of the "uncertain objective" temperature β_i:

* **B2, SGD reading** (aleatoric, factor η): constant-step SGD with batch B around θ*, per direction
  x_{t+1} = (1−ηλ_i)x_t − ηξ_t with Var ξ = s_i^B, gives σ_i² = η s_i^B / (λ_i(2 − ηλ_i)) (stable for
  ηλ_i < 2) and β_i⁻¹ = λ_iσ_i² = η s_i^B/(2 − ηλ_i). :func:`sgd_stationary_test` runs vmapped chains and
  compares per direction.
* **B1, sample reading** (epistemic, factor n): the empirical minimiser moves with the sample,
  Var(q_i·θ̂_n) = s_i/(nλ_i²), β_i = λ_i/(2 s_i). :func:`bootstrap_minimizer_test` re-minimises on bootstrap
  resamples, warm from θ* so every run stays in one ghost copy (cold starts are aligned first).

The law holds as η → 0 and drifts above it at practical steps: report the ratio, never assume 1.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import vmap

from dicelab.symmetry.curvature import (
    FlatObjective,
    Spectrum,
    _project_noise,
    batch_factor,
    draw_batches,
    hessian_topk,
    minimize_full_batch,
)
from dicelab.symmetry.errors import SymmetryError

__all__ = ["UncertaintyTable", "sgd_stationary_test", "bootstrap_minimizer_test"]


@dataclass
class UncertaintyTable:
    """One row per top Hessian direction (λ_i, noise s_i, measured and predicted variances, ratios,
    temperatures) plus the run's settings, the excess loss and the off-diagonal share of QᵀSQ."""

    reading: str
    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def column(self, name: str) -> list[Any]:
        return [r.get(name) for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {"reading": self.reading, "rows": self.rows, "settings": self.settings, "summary": self.summary}


def _gen(generator: torch.Generator | None, name: str) -> torch.Generator:
    if generator is not None:
        return generator
    from dicelab.seeding import generator as make

    return make(0, name)


def _offdiag_share(M: torch.Tensor) -> float:
    off = M - torch.diag(torch.diagonal(M))
    total = float(M.norm())
    return float(off.norm()) / total if total > 0 else 0.0


def sgd_stationary_test(model: nn.Module, loss_fn: Any, data: Any, *, eta_rel: float = 0.1, batch_size: int = 32,
                        k: int = 8, n_chains: int = 32, steps: int = 3000, burn_in: int = 500,
                        noise_at: str = "trajectory", weight_decay: float = 0.0,
                        generator: torch.Generator | None = None, spectrum: Spectrum | None = None,
                        noise_points: int = 16) -> UncertaintyTable:
    """Run ``n_chains`` constant-step SGD chains from θ* (the model's parameters, a minimiser) with
    η = ``eta_rel``/λ_max and a fresh independent batch each step; compare the measured variance of
    q_i·(θ_t − θ*) after ``burn_in`` with σ_i² = η s_i^B/(λ_i(2 − ηλ_i)). ``noise_at="trajectory"`` averages
    QᵀS(θ_t)Q over ``noise_points`` points of the run; ``"theta_star"`` uses S(θ*)."""
    if not 0.0 < eta_rel < 2.0:
        raise ValueError(f"eta_rel={eta_rel}: eta*lambda_max must lie in (0, 2) for a stable SGD chain")
    if noise_at not in ("trajectory", "theta_star"):
        raise SymmetryError(f"sgd_stationary_test: noise_at must be 'trajectory' or 'theta_star', got {noise_at!r}")
    if not 0 <= burn_in < steps:
        raise SymmetryError(f"sgd_stationary_test: burn_in={burn_in} must be in [0, steps={steps})")
    t0 = time.perf_counter()
    gen = _gen(generator, "symmetry.sgd")
    obj = FlatObjective(model, loss_fn, data, weight_decay=weight_decay)
    if not 1 <= batch_size < obj.N:
        raise SymmetryError(f"sgd_stationary_test: batch_size must be in [1, {obj.N - 1}], got {batch_size}")
    spec = spectrum if spectrum is not None else hessian_topk(obj, k=k)
    lam, Q = spec.eigvals[:k].to(torch.float64), spec.eigvecs[:, :k].to(torch.float64)
    if float(lam[0]) <= 0:
        raise SymmetryError(f"sgd_stationary_test: largest Hessian eigenvalue {float(lam[0]):.3g} <= 0; "
                            "theta is not a minimiser")
    eta = eta_rel / float(lam[0])
    theta_star = obj.theta0
    N, B, C = obj.N, batch_size, n_chains

    forward = vmap(obj.outputs)

    def step_grad(th: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        # one vmapped forward for all chains, one backward of the summed chain losses: chain c's loss depends
        # on row c only, so row c of the gradient is its own minibatch gradient (cheaper than vmap(grad))
        with torch.enable_grad():
            th = th.detach().requires_grad_(True)
            out = forward(th, xb)
            ell = obj.loss_fn(out.flatten(0, 1), yb.flatten(0, 1)).view(C, -1)
            total = ell.mean(dim=1).sum() + 0.5 * obj.wd * (th * th).sum()
            return torch.autograd.grad(total, th)[0]
    chains = theta_star.repeat(C, 1)
    k_eff = lam.numel()
    s1 = torch.zeros(k_eff, dtype=torch.float64)
    s2 = torch.zeros(k_eff, dtype=torch.float64)
    count = 0
    record_at = set(torch.linspace(burn_in, steps - 1, noise_points).round().long().tolist())
    saved: list[torch.Tensor] = []
    excess: list[float] = []
    loss_star = float(obj.loss(theta_star))
    all_loss = vmap(obj.loss)
    for step in range(steps):
        idx = draw_batches(C, N, B, gen)
        chains = chains - eta * step_grad(chains, obj.x[idx], obj.y[idx]).detach()
        if not torch.isfinite(chains).all():
            raise SymmetryError(f"sgd_stationary_test: chains diverged at step {step} (eta*lambda_max={eta_rel})")
        if step >= burn_in:
            P = (chains - theta_star) @ Q
            s1 += P.sum(0)
            s2 += (P * P).sum(0)
            count += C
            if step in record_at:
                saved.append(chains[len(saved) % C].clone())
                excess.append(float(all_loss(chains).mean()) - loss_star)
    mean = s1 / count
    measured = s2 / count - mean * mean
    QtSQ_star, trace_star, _ = _project_noise(obj, theta_star, Q)
    QtSQ_traj = torch.zeros_like(QtSQ_star)
    trace_traj = 0.0
    for th in saved:
        M, tr, _ = _project_noise(obj, th, Q)
        QtSQ_traj += M / len(saved)
        trace_traj += tr / len(saved)
    use = QtSQ_traj if noise_at == "trajectory" else QtSQ_star
    trace_use = trace_traj if noise_at == "trajectory" else trace_star
    fac = batch_factor(N, B)
    s = torch.diagonal(use)
    s_B = s * fac
    pred = eta * s_B / (lam * (2 - eta * lam))
    pred_star = eta * torch.diagonal(QtSQ_star) * fac / (lam * (2 - eta * lam))  # the other noise source
    rows = []
    for i in range(k_eff):
        rows.append({"i": i, "lambda": float(lam[i]), "eta_lambda": eta * float(lam[i]),
                     "s_theta_star": float(QtSQ_star[i, i]), "s_trajectory": float(QtSQ_traj[i, i]),
                     "s_B": float(s_B[i]), "sigma2_measured": float(measured[i]), "sigma2_B2": float(pred[i]),
                     "ratio_B2": float(measured[i] / pred[i]),
                     "sigma2_B2_theta_star": float(pred_star[i]),
                     "ratio_B2_theta_star": float(measured[i] / pred_star[i]),
                     "T_measured": float(lam[i] * measured[i]), "T_B2": float(eta * s_B[i] / (2 - eta * lam[i])),
                     "beta_B2": float((2 - eta * lam[i]) / (eta * s_B[i]))})
    summary = {"excess_loss_measured": sum(excess) / len(excess) if excess else float("nan"),
               "excess_loss_pred_topk": float(0.5 * (lam * pred).sum()),
               "excess_loss_pred_trace": eta * trace_use * fac / 4,
               "offdiag_share": _offdiag_share(use), "seconds": time.perf_counter() - t0,
               "ratio_min": min(r["ratio_B2"] for r in rows), "ratio_max": max(r["ratio_B2"] for r in rows)}
    settings = {"eta": eta, "eta_rel": eta_rel, "eta_lambda_max": eta * float(lam[0]), "batch_size": B,
                "n_chains": C, "steps": steps, "burn_in": burn_in, "noise_at": noise_at, "N": N, "D": obj.D,
                "weight_decay": weight_decay, "k": k_eff}
    return UncertaintyTable("B2", rows, settings, summary)


def _reinit(model: nn.Module, seed: int) -> nn.Module:
    m = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in m.modules():
            if hasattr(mod, "reset_parameters") and mod is not m:
                mod.reset_parameters()
    return m


def bootstrap_minimizer_test(model: nn.Module, loss_fn: Any, data: Any, *, resamples: int = 20, k: int = 8,
                             warm_start: bool = True, align: str | None = "wm", weight_decay: float = 0.0,
                             generator: torch.Generator | None = None, spectrum: Spectrum | None = None,
                             gtol: float = 1e-6, max_iter: int = 2000) -> UncertaintyTable:
    """Re-minimise on ``resamples`` bootstrap resamples of the data (warm from θ* by default; cold starts are
    aligned to θ* by weight matching when ``align="wm"``) and compare Var(q_i·θ̂) with s_i/(nλ_i²)."""
    t0 = time.perf_counter()
    gen = _gen(generator, "symmetry.bootstrap")
    obj = FlatObjective(model, loss_fn, data, weight_decay=weight_decay)
    spec = spectrum if spectrum is not None else hessian_topk(obj, k=k)
    lam, Q = spec.eigvals[:k].to(torch.float64), spec.eigvecs[:, :k].to(torch.float64)
    QtSQ, _, _ = _project_noise(obj, obj.theta0, Q)
    s = torch.diagonal(QtSQ)
    star = obj.to_module(obj.theta0)
    proj = []
    for _r in range(resamples):
        w = torch.bincount(torch.randint(0, obj.N, (obj.N,), generator=gen), minlength=obj.N).to(torch.float64)
        start = star if warm_start else _reinit(star, int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        m = minimize_full_batch(start, loss_fn, (obj.x, obj.y), weight_decay=weight_decay, gtol=gtol,
                                max_iter=max_iter, sample_weights=w)
        if not warm_start and align == "wm":
            from dicelab.symmetry.match import align as align_models

            m, _ = align_models(star, m, method="weight")
        theta = torch.cat([dict(m.named_parameters())[n].detach().reshape(-1) for n in obj.names])
        proj.append((theta - obj.theta0) @ Q)
    P = torch.stack(proj)
    measured = P.var(dim=0, unbiased=True)
    pred = s / (obj.N * lam * lam)
    rows = [{"i": i, "lambda": float(lam[i]), "s_theta_star": float(s[i]), "var_B1_measured": float(measured[i]),
             "var_B1_pred": float(pred[i]), "ratio_B1": float(measured[i] / pred[i]),
             "beta_B1": float(lam[i] / (2 * s[i]))} for i in range(lam.numel())]
    summary = {"seconds": time.perf_counter() - t0, "ratio_min": min(r["ratio_B1"] for r in rows),
               "ratio_max": max(r["ratio_B1"] for r in rows),
               "offdiag_share": _offdiag_share(QtSQ), "corr_s_lambda": _corr(s, lam)}
    settings = {"resamples": resamples, "warm_start": warm_start, "align": align, "N": obj.N, "D": obj.D,
                "weight_decay": weight_decay, "k": lam.numel()}
    return UncertaintyTable("B1", rows, settings, summary)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else math.nan
