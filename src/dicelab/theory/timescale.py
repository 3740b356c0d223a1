"""Time-scale conversions and the α-exponent fit that separates the two slow regimes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from dicelab.errors import ConfigError
from dicelab.theory.limit import limit
from dicelab.theory.manifold import as_batch
from dicelab.theory.objective import NoisyObjective
from dicelab.theory.reg import classify
from dicelab.theory.simulate import SimResult, simulate, time_scale

__all__ = ["tau_of", "steps_for", "alpha_sweep", "sigma_sweep", "SweepResult", "SigmaSweepResult", "fit_loglog",
           "regime_of_slope", "crossing"]


def tau_of(k: float, alpha: float, sigma: float, regime: str) -> float:
    """Rescaled time after k steps: τ₁ = ασ²k (non-degenerate) or τ₂ = α²σ²k (degenerate)."""
    s = time_scale(alpha, sigma, regime)
    if s is None:
        raise ConfigError(f"regime {regime!r} has no time scale")
    return k * s


def steps_for(tau: float, alpha: float, sigma: float, regime: str) -> int:
    """Steps to reach rescaled time τ (rounded)."""
    s = time_scale(alpha, sigma, regime)
    if s is None or s == 0:
        raise ConfigError(f"regime {regime!r} with sigma={sigma} has no time scale")
    return int(round(tau / s))


def fit_loglog(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares fit log y = s log x + c: returns (s, SE of s, c). SE is 0 for two points."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    A = np.stack([lx, np.ones_like(lx)], 1)
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    s, c = float(coef[0]), float(coef[1])
    n = len(lx)
    if n > 2:
        resid = ly - A @ coef
        s2 = float(resid @ resid) / (n - 2)
        se = math.sqrt(s2 / float(((lx - lx.mean()) ** 2).sum()))
    else:
        se = 0.0
    return s, se, c


def regime_of_slope(s: float) -> str:
    """s ∈ [−1.15, −0.85] non-degenerate, s ∈ [−2.15, −1.85] degenerate, else undetermined."""
    if -1.15 <= s <= -0.85:
        return "non-degenerate"
    if -2.15 <= s <= -1.85:
        return "degenerate"
    return "undetermined"


def crossing(series: Tensor | np.ndarray, threshold: float, direction: str = "down") -> float | None:
    """First index where the series crosses ``threshold``, linearly interpolated (None if never)."""
    v = np.asarray(series, float)
    hit = v <= threshold if direction == "down" else v >= threshold
    idx = np.flatnonzero(hit)
    if idx.size == 0:
        return None
    k = int(idx[0])
    if k == 0:
        return 0.0
    a, b = v[k - 1], v[k]
    return (k - 1) + (a - threshold) / (a - b) if a != b else float(k)


@dataclass
class SweepResult:
    """k*(α) (steps to cross the threshold), the fitted exponent s of k* ∝ α^s with its SE, the pairwise
    slopes and the regime that s implies; also the limit error |τ*_sim − τ*_limit| vs α and its slope."""

    alphas: list[float]
    k_star: list[float]
    tau_star: list[float]
    slope: float
    slope_se: float
    intercept: float
    pairwise: list[float]
    regime: str
    runtime_s: list[float]
    tau_star_limit: float | None = None
    errors: list[float] = field(default_factory=list)
    error_slope: float | None = None
    sims: list[SimResult] = field(default_factory=list, repr=False)

    def table(self) -> list[dict[str, float]]:
        return [{"alpha": a, "k_star": k, "tau_star": t, "runtime_s": r}
                for a, k, t, r in zip(self.alphas, self.k_star, self.tau_star, self.runtime_s, strict=True)]


def _limit_crossing(obj: NoisyObjective, w0: Tensor, observable: Callable[[Tensor], Tensor], threshold: float,
                    direction: str, tau_hint: float, dtau: float) -> float | None:
    grid = np.arange(0.0, tau_hint + 1e-12, dtau).tolist()
    tr = limit(obj, w0, grid, observables={"o": observable}, dtau=dtau)
    if tr.kind == "constant":
        return None
    series = tr.mean("o").numpy()
    k = crossing(series, threshold, direction)
    return None if k is None else float(np.interp(k, np.arange(len(grid)), tr.tau.numpy()))


def alpha_sweep(
    obj: NoisyObjective, w0: Tensor, alphas: Sequence[float], observable: Callable[[Tensor], Tensor],
    threshold: float, direction: str = "down", *, sigma: float | None = None, chains: int = 2000,
    regime: str = "auto", tau_max: float | None = None, seed: int = 0, project: str | None = "retract",
    limit_dtau: float = 0.05, keep_sims: bool = False, evaluations: int = 300,
) -> SweepResult:
    """k*(α) = first step where the seed-mean (projected) observable crosses ``threshold`` (interpolated);
    least-squares fit log k* = s log α + c at fixed σ. s ≈ −1: non-degenerate (τ₁), s ≈ −2: degenerate (τ₂).

    ``tau_max`` bounds the run in the regime's time variable (default: 2× the limit's crossing time). The
    observable is evaluated (and projected) about ``evaluations`` times up to ``tau_max`` (every step when fewer
    steps), then linearly interpolated: the seed mean is smooth, so the stride costs nothing measurable in k*.
    """
    if direction not in ("down", "up"):
        raise ConfigError(f"direction must be 'down' or 'up', got {direction!r}")
    alphas = [float(a) for a in alphas]
    if len(alphas) < 2 or any(not (a > 0 and math.isfinite(a)) for a in alphas):
        raise ConfigError(f"alpha_sweep needs at least two positive alphas, got {alphas}")
    if sigma is not None and sigma != obj.sigma:
        obj = obj.with_sigma(sigma)
    w0 = as_batch(w0)[:1]
    obj.bind(w0)
    if regime == "auto":
        regime = classify(obj, w0, alpha=min(alphas)).regime
    tau_lim = None
    if tau_max is None:
        tau_lim = _limit_crossing(obj, w0, observable, threshold, direction, 10.0, limit_dtau)
        if tau_lim is None:
            raise ConfigError("alpha_sweep: the limit never crosses the threshold; pass tau_max=")
        tau_max = 2.0 * tau_lim
    elif tau_max <= 0:
        raise ConfigError(f"tau_max must be > 0, got {tau_max}")

    def stop(_k: int, means: dict[str, float]) -> bool:
        v = means["obs"]
        return v <= threshold if direction == "down" else v >= threshold

    k_star, tau_star, runtimes, sims = [], [], [], []
    for a in alphas:
        scale = time_scale(a, obj.sigma, regime)
        if scale is None:
            raise ConfigError("alpha_sweep needs a non-trivial regime")
        n_steps = int(math.ceil(tau_max / scale))
        stride = max(1, n_steps // evaluations)
        sim = simulate(obj, w0, a, steps=n_steps, regime=regime, chains=chains, every_step={"obs": observable},
                       project=project, seed=seed, stop=stop, every_stride=stride)
        k = crossing(sim.every_step["obs"], threshold, direction)
        k = None if k is None else k * stride
        if k is None:
            raise ConfigError(f"alpha={a:g}: threshold {threshold} not crossed within tau_max={tau_max:g}")
        k_star.append(float(k))
        tau_star.append(float(k) * scale)
        runtimes.append(sim.runtime_s)
        if keep_sims:
            sims.append(sim)
    s, se, c = fit_loglog(alphas, k_star)
    pair = [math.log(k_star[i + 1] / k_star[i]) / math.log(alphas[i + 1] / alphas[i]) for i in range(len(alphas) - 1)]
    errors, err_slope = [], None
    if tau_lim is not None:
        errors = [abs(t - tau_lim) for t in tau_star]
        if all(e > 0 for e in errors):
            err_slope = fit_loglog(alphas, errors)[0]
    return SweepResult(alphas, k_star, tau_star, s, se, c, pair, regime_of_slope(s), runtimes, tau_lim, errors,
                       err_slope, sims)


@dataclass
class SigmaSweepResult:
    """Sup error of the projected seed mean against the limit for each σ at fixed α, and its log-log slope."""

    sigmas: list[float]
    errors: list[float]
    slope: float
    alpha: float


def sigma_sweep(
    obj: NoisyObjective, w0: Tensor, sigmas: Sequence[float], alpha: float, observable: Callable[[Tensor], Tensor],
    tau: Sequence[float], *, chains: int = 2000, seed: int = 0, regime: str = "auto", dtau: float = 0.05,
) -> SigmaSweepResult:
    """Expose the O(σ²) part of the limit error (slope ≈ +2 in the non-degenerate case)."""
    from dicelab.theory.simulate import compare

    w0 = as_batch(w0)[:1]
    errs = []
    traj = None
    for s in sigmas:
        o = obj.with_sigma(s)
        o.bind(w0)
        if traj is None:
            traj = limit(o, w0, tau, regime=regime, observables={"obs": observable}, dtau=dtau)
        sim = simulate(o, w0, alpha, tau=tau, regime=traj.regime or regime, chains=chains, seed=seed,
                       observables={"obs": observable})
        errs.append(compare(sim, traj, "obs").sup_error)
    slope = fit_loglog(sigmas, errs)[0] if len(sigmas) > 1 and all(e > 0 for e in errs) else float("nan")
    return SigmaSweepResult([float(s) for s in sigmas], errs, slope, float(alpha))
