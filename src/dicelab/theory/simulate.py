"""Many-seed batched simulation of the noisy recursion ``w_{k+1} = w_k − α ∇_w L̂(w_k, η_k)``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from dicelab.errors import ConfigError
from dicelab.seeding import generator
from dicelab.theory._autodiff import threads_for
from dicelab.theory.errors import SimulationDiverged
from dicelab.theory.limit import Trajectory
from dicelab.theory.manifold import ZeroLossSet, as_batch
from dicelab.theory.objective import NoisyObjective
from dicelab.theory.reg import classify

__all__ = ["Stats", "SimResult", "simulate", "compare", "Comparison", "gradient_descent", "time_scale"]

Observable = Callable[[Tensor], Tensor]


@dataclass
class Stats:
    """Seed statistics of one observable at the recorded times: mean, standard error, seed SD, (R, ...)."""

    mean: Tensor
    se: Tensor
    sd: Tensor


@dataclass
class SimResult:
    """Output of :func:`simulate`. ``raw``/``proj``: observable name → :class:`Stats` over the recorded steps
    (raw iterates / iterates projected onto Γ); ``every_step``: name → seed mean at every step."""

    alpha: float
    sigma: float
    regime: str
    tau_per_step: float | None
    steps: Tensor
    tau: Tensor
    raw: dict[str, Stats]
    proj: dict[str, Stats]
    every_step: dict[str, Tensor]
    every_stride: int
    final_raw: Tensor
    final_proj: Tensor | None
    chains: int
    runtime_s: float
    samples: dict[str, Tensor] = field(default_factory=dict)
    samples_raw: dict[str, Tensor] = field(default_factory=dict)
    stopped_at: int | None = None

    @property
    def total_steps(self) -> int:
        return int(self.steps[-1]) if len(self.steps) else 0


def time_scale(alpha: float, sigma: float, regime: str) -> float | None:
    """τ per step: ασ² (non-degenerate, τ₁) or α²σ² (degenerate, τ₂); None for the trivial regime."""
    if regime in ("non-degenerate", "tau1"):
        return alpha * sigma**2
    if regime in ("degenerate", "tau2"):
        return alpha**2 * sigma**2
    if regime in ("trivial", "steps"):
        return None
    raise ConfigError(f"regime must be 'auto', 'non-degenerate', 'degenerate' or 'trivial', got {regime!r}")


def _project(Z: ZeroLossSet, w: Tensor, how: str | None) -> Tensor | None:
    if how is None or how == "none":
        return None
    if how == "retract":
        return Z.retract(w)
    if how == "phi":
        return Z.phi(w)
    raise ConfigError(f"project must be 'retract', 'phi' or None, got {how!r}")


def _stats(values: list[Tensor]) -> Stats:
    v = torch.stack(values)  # (R, S, ...)
    S = v.shape[1]
    sd = v.std(1, unbiased=True) if S > 1 else torch.zeros_like(v[:, 0])
    return Stats(v.mean(1), sd / math.sqrt(S), sd)


def simulate(
    obj: NoisyObjective,
    w0: Tensor,
    alpha: float,
    *,
    tau: float | Sequence[float] | None = None,
    steps: int | Sequence[int] | None = None,
    regime: str = "auto",
    chains: int = 2000,
    record: Sequence[float] | None = None,
    every_step: Sequence[str] | Mapping[str, Observable] = (),
    observables: Mapping[str, Observable] | None = None,
    project: str | None = "retract",
    project_every_step: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    threads: str | int = "auto",
    init_jitter: float = 0.0,
    keep_samples: Sequence[str] = (),
    every_stride: int = 1,
    stop: Callable[[int, dict[str, float]], bool] | None = None,
) -> SimResult:
    """Run ``chains`` independent chains as one (S, d) tensor; record observables at τ values (in the regime's
    time variable, τ₁ = ασ²k or τ₂ = α²σ²k) or at explicit ``steps``.

    η comes from generator ``theory.noise`` and optional initial jitter (scale ``init_jitter``) from
    ``theory.init``, both derived from ``seed``: same seed, config and S ⇒ bit-identical on CPU. Observables map
    (S, d) → (S,) or (S, k) and are evaluated on raw and projected states (``project='retract'`` or ``'phi'``).
    ``every_step`` names observables (or gives a mapping) whose seed mean is kept at every ``every_stride``-th step;
    ``keep_samples`` names observables whose per-chain values are kept at every record (``samples``: projected,
    ``samples_raw``: raw). ``stop(k, means)`` may end the run early (time-scale sweeps). Divergence (non-finite, ‖w‖ > 1e6) raises
    :class:`SimulationDiverged` naming α, step, chain and αλ_max.
    """
    t0 = time.perf_counter()
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alpha must be a positive number, got {alpha!r}")
    if every_stride < 1:
        raise ConfigError(f"every_stride must be >= 1, got {every_stride}")
    if chains < 1:
        raise ConfigError(f"chains must be >= 1, got {chains}")
    w0 = as_batch(w0, dtype=torch.float64)
    obj.bind(w0)
    Z = ZeroLossSet(obj)
    observables = dict(observables or {})
    if isinstance(every_step, Mapping):
        observables.update(every_step)
        every_names = list(every_step)
    else:
        every_names = list(every_step)
    for nm in every_names:
        if nm not in observables:
            raise ConfigError(f"every_step observable {nm!r} is not among the observables")
    if regime == "auto":
        regime = classify(obj, w0[:1], alpha=alpha).regime
    scale = time_scale(alpha, obj.sigma, regime)
    if record is not None and tau is None:
        tau = record
    if steps is not None:
        rec_steps = [int(steps)] if isinstance(steps, int | np.integer) else [int(s) for s in steps]
    elif tau is not None:
        if scale is None or scale == 0:
            raise ConfigError(f"regime {regime!r} (sigma={obj.sigma}) has no time scale: pass steps=")
        taus = [float(tau)] if isinstance(tau, int | float) else [float(t) for t in tau]
        rec_steps = [int(round(t / scale)) for t in taus]
    else:
        raise ConfigError("give tau= (recording times) or steps=")
    if any(s < 0 for s in rec_steps):
        raise ConfigError(f"steps must be >= 0, got {rec_steps}")
    rec_set = sorted(set(rec_steps) | {0})
    K = rec_set[-1]

    S = chains
    state = (w0 if w0.shape[0] == S else w0[:1].expand(S, -1)).to(dtype).clone()
    if init_jitter > 0:
        gi = generator(seed, "theory.init")
        state = state + init_jitter * torch.randn(state.shape, generator=gi, dtype=torch.float64).to(dtype)
    gen = generator(seed, "theory.noise")
    raw_v: dict[str, list[Tensor]] = {k: [] for k in observables}
    proj_v: dict[str, list[Tensor]] = {k: [] for k in observables}
    every: dict[str, list[float]] = {k: [] for k in every_names}
    done_steps: list[int] = []
    final_proj = None
    stopped = None
    lam_max = None

    def diverged(k: int, w: Tensor) -> None:
        bad = ~torch.isfinite(w).all(dim=1) | (w.abs().amax(dim=1) > 1e6)
        if bool(bad.any()):
            nonlocal lam_max
            if lam_max is None:
                lam_max = float(Z.spectrum(w0[:1].to(torch.float64)).lam_max[0])
            i = int(bad.nonzero()[0])
            raise SimulationDiverged(
                f"simulation diverged at alpha={alpha:g}, step {k}, chain {i} "
                f"(alpha*lambda_max at w0 = {alpha * lam_max:.3g}; needs < 2): lower alpha"
            )

    def record(k: int, w64: Tensor, pw: Tensor | None) -> None:
        """Store every observable at step k, raw and (when projecting) on Γ."""
        for nm, f in observables.items():
            raw_v[nm].append(f(w64))
            if pw is not None:
                proj_v[nm].append(f(pw))
        done_steps.append(k)

    with threads_for(threads, S * w0.shape[1]), torch.no_grad():
        eta = obj.sample_eta(gen, S, dtype)
        for k in range(K + 1):
            is_rec = k in rec_set
            is_every = bool(every_names) and k % every_stride == 0
            if is_rec or is_every:
                w = obj.report(state, eta)
                if is_rec:
                    diverged(k, w)
                    w64 = w.to(torch.float64)
                    pw = _project(Z, w64, project)
                    record(k, w64, pw)
                    final_proj = pw
                if is_every:
                    w64 = w.to(torch.float64)
                    pe = pw if is_rec else (_project(Z, w64, project) if project_every_step else None)
                    target = pe if pe is not None else w64
                    means = {nm: float(observables[nm](target).mean()) for nm in every_names}
                    for nm in every_names:
                        every[nm].append(means[nm])
                    if stop is not None and stop(k, means):
                        stopped = k
                        if not is_rec:
                            record(k, w64, pe)
                            final_proj = pe
                        break
            if k == K:
                break
            state = state - alpha * obj.grad_hat(state, eta)
            if k % 64 == 63:
                diverged(k + 1, state)
            eta = obj.sample_eta(gen, S, dtype)
    final_raw = obj.report(state, eta).to(torch.float64)
    raw = {k: _stats(v) for k, v in raw_v.items() if v}
    proj = {k: _stats(v) for k, v in proj_v.items() if v}
    samples = {k: torch.stack(proj_v[k] if proj_v[k] else raw_v[k]) for k in keep_samples}
    samples_raw = {k: torch.stack(raw_v[k]) for k in keep_samples}
    steps_t = torch.tensor(done_steps, dtype=torch.int64)
    tau_t = steps_t.to(torch.float64) * (scale if scale is not None else 1.0)
    return SimResult(
        alpha=float(alpha), sigma=obj.sigma, regime=regime, tau_per_step=scale, steps=steps_t, tau=tau_t,
        raw=raw, proj=proj, every_step={k: torch.tensor(v, dtype=torch.float64) for k, v in every.items()},
        every_stride=every_stride,
        final_raw=final_raw, final_proj=final_proj, chains=S, runtime_s=time.perf_counter() - t0,
        samples=samples, samples_raw=samples_raw, stopped_at=stopped,
    )


def gradient_descent(obj: NoisyObjective, w0: Tensor, alpha: float, steps: int) -> Tensor:
    """Plain GD ``w ← w − α∇L(w)`` (the σ = 0 reference), batched."""
    w = as_batch(w0).clone()
    obj.bind(w)
    with torch.no_grad():
        for _ in range(int(steps)):
            w = w - alpha * obj.grad_loss(w)
    return w


@dataclass
class Comparison:
    """Simulation vs limit for one observable: sup over recorded τ of |seed mean − limit| (projected), with
    the seed SE/SD there, and KS / W₁ distances of the laws when the limit has many paths."""

    observable: str
    sup_error: float
    errors: Tensor
    tau: Tensor
    se: Tensor
    sd: Tensor
    ks: Tensor | None = None
    w1: Tensor | None = None

    def __str__(self) -> str:
        i = int(self.errors.argmax()) if self.errors.numel() else 0
        return (f"{self.observable}: sup |mean_sim - limit| = {self.sup_error:.4g} at tau={float(self.tau[i]):.4g} "
                f"(2 SE = {2 * float(self.se[i]):.2g}, seed SD = {float(self.sd[i]):.3g})")


def _ks_w1(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from scipy.stats import ks_2samp, wasserstein_distance

    return float(ks_2samp(a, b).statistic), float(wasserstein_distance(a, b))


def compare(sim: SimResult, traj: Trajectory, observable: str, use: str = "proj") -> Comparison:
    """Compare a simulation with a limit trajectory at the simulation's recorded τ (nearest limit time)."""
    stats = (sim.proj if use == "proj" and sim.proj else sim.raw).get(observable)
    if stats is None or observable not in traj.observables:
        raise ConfigError(f"observable {observable!r} missing from the simulation or the limit")
    idx = [int((traj.tau - t).abs().argmin()) for t in sim.tau]
    lim = torch.stack([traj.observables[observable][i].mean(0) for i in idx])
    err = (stats.mean - lim).abs()
    err_s = err.reshape(err.shape[0], -1).amax(-1)
    se = stats.se.reshape(err.shape[0], -1).amax(-1)
    sd = stats.sd.reshape(err.shape[0], -1).amax(-1)
    ks = w1 = None
    if traj.kind == "sde" and observable in sim.samples:
        ks_l, w1_l = [], []
        for r, i in enumerate(idx):
            a = sim.samples[observable][r].reshape(-1).numpy()
            b = traj.observables[observable][i].reshape(-1).numpy()
            k_, w_ = _ks_w1(a, b)
            ks_l.append(k_)
            w1_l.append(w_)
        ks, w1 = torch.tensor(ks_l), torch.tensor(w1_l)
    return Comparison(observable, float(err_s.max()), err_s, sim.tau, se, sd, ks, w1)

