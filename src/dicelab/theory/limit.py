"""Integrators for the predicted limit on Γ: projected RK4 flow and projected Euler–Maruyama SDE."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dicelab.errors import ConfigError
from dicelab.seeding import generator
from dicelab.theory._autodiff import threads_for
from dicelab.theory.manifold import ZeroLossSet, as_batch
from dicelab.theory.objective import NoisyObjective
from dicelab.theory.reg import classify, grad_reg, noise_jacobian, reg

__all__ = ["Trajectory", "limit_flow", "limit_sde", "limit", "drift_field", "record_times"]

Observable = Callable[[Tensor], Tensor]


@dataclass
class Trajectory:
    """A limit path (or P paths) recorded at times ``tau``: ``w`` is (T, P, d), observables (T, P, ...)."""

    tau: Tensor
    w: Tensor
    observables: dict[str, Tensor] = field(default_factory=dict)
    kind: str = "flow"  # "flow" | "sde" | "constant"
    regime: str = ""

    def mean(self, name: str) -> Tensor:
        """Path mean of an observable, (T, ...)."""
        return self.observables[name].mean(1)

    def at(self, name: str, tau: float) -> Tensor:
        """Path mean of an observable at the recorded time closest to ``tau``."""
        i = int((self.tau - tau).abs().argmin())
        return self.observables[name][i].mean(0)


def record_times(tau: float | Sequence[float]) -> list[float]:
    """Sorted recording times including 0."""
    ts = [float(tau)] if isinstance(tau, int | float) else [float(t) for t in tau]
    if any(not math.isfinite(t) or t < 0 for t in ts):
        raise ConfigError(f"tau values must be finite and >= 0, got {ts}")
    return sorted({0.0, *ts})


def _grid(times: list[float], dtau: float) -> list[tuple[float, bool]]:
    """Step sizes landing exactly on each recording time: [(h, record_after)]."""
    out: list[tuple[float, bool]] = []
    for a, b in zip(times[:-1], times[1:], strict=True):
        n = max(1, math.ceil((b - a) / dtau - 1e-9))
        out += [((b - a) / n, i == n - 1) for i in range(n)]
    return out


def _eval_obs(observables: Mapping[str, Observable] | None, w: Tensor) -> dict[str, Tensor]:
    return {k: f(w).detach() for k, f in (observables or {}).items()}


def drift_field(obj: NoisyObjective, field_kind: str = "auto", w: Tensor | None = None) -> tuple[str, Callable[[Tensor], Tensor]]:
    """The vector field of the deterministic limit: ``"reg"`` v = −P_T∇Reg (non-degenerate), ``"drift"``
    v = P_T b (degenerate with P_T J = 0, e.g. label noise). ``"auto"`` decides from P_T∇Reg at w."""
    Z = ZeroLossSet(obj)
    if field_kind == "auto":
        if w is None:
            raise ValueError("field 'auto' needs a point")
        w = as_batch(w)
        gr = grad_reg(obj, w)
        tang = (Z.tangent_projector(w) @ gr[..., None])[..., 0].norm(dim=-1).max()
        field_kind = "reg" if float(tang) > 1e-8 * (1 + float(gr.norm(dim=-1).max())) else "drift"
    if field_kind == "reg":
        def v_reg(x: Tensor) -> Tensor:
            return -(Z.tangent_projector(x) @ grad_reg(obj, x)[..., None])[..., 0]

        return "reg", v_reg
    if field_kind == "drift":
        return "drift", lambda x: tangential_drift(obj, Z, x)
    raise ConfigError(f"field must be 'auto', 'reg' or 'drift', got {field_kind!r}")


def tangential_drift(obj: NoisyObjective, Z: ZeroLossSet, x: Tensor, PT: Tensor | None = None,
                     J: Tensor | None = None) -> Tensor:
    """P_T b(x) with Σ = J C Jᵀ (closed-form shortcuts when the noise model declares one)."""
    hint = obj.drift_hint
    if hint is not None and hint.kind == "hessian_aligned":
        return Z.drift_hessian_aligned(x, hint.c, hint.trace, PT=PT)
    if hint is not None and hint.kind == "isotropic":
        return Z.drift_isotropic(x, PT=PT)
    J = noise_jacobian(obj, x) if J is None else J
    Sigma = J @ J.transpose(-1, -2) if obj.C is None else J @ obj.C.to(x.dtype) @ J.transpose(-1, -2)
    b = Z.degenerate_drift(x, Sigma)
    PT = Z.tangent_projector(x) if PT is None else PT
    return (PT @ b[..., None])[..., 0]


def limit_flow(
    obj: NoisyObjective, w0: Tensor, tau: float | Sequence[float], dtau: float = 1e-2, *,
    field: str = "auto", observables: Mapping[str, Observable] | None = None, check_reg: bool = True,
    threads: str | int = "auto",
) -> Trajectory:
    """Projected RK4 on the limit field (stages use its ambient extension off Γ; ``retract`` after each step,
    which keeps order 4). Records Reg(W) and raises if it increases by more than 1e-12 (field ``"reg"``)."""
    w0 = as_batch(w0)
    obj.bind(w0)
    with threads_for(threads, w0.numel()):
        return _limit_flow(obj, w0, tau, dtau, field, observables, check_reg)


def _limit_flow(obj: NoisyObjective, w0: Tensor, tau: float | Sequence[float], dtau: float, field: str,
                observables: Mapping[str, Observable] | None, check_reg: bool) -> Trajectory:
    Z = ZeroLossSet(obj)
    W = Z.retract(w0)
    kind, v = drift_field(obj, field, W)
    times = record_times(tau)
    ws, obs = [W.clone()], [_eval_obs(observables, W)]
    regs = [reg(obj, W).value]
    last_reg = regs[0]
    for h, rec in _grid(times, dtau):
        k1 = v(W)
        k2 = v(W + 0.5 * h * k1)
        k3 = v(W + 0.5 * h * k2)
        k4 = v(W + h * k3)
        W = Z.retract(W + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
        if kind == "reg" and check_reg:
            r = reg(obj, W).value
            if bool((r > last_reg + 1e-12).any()):
                raise RuntimeError(f"limit_flow: Reg increased from {last_reg.max():.15g} to {r.max():.15g}; "
                                   f"lower dtau (={dtau})")
            last_reg = r
        if rec:
            ws.append(W.clone())
            obs.append(_eval_obs(observables, W))
            regs.append(reg(obj, W).value)
    out = {k: torch.stack([o[k] for o in obs]) for k in (observables or {})}
    out["Reg"] = torch.stack(regs)
    return Trajectory(torch.tensor(times, dtype=torch.float64), torch.stack(ws), out, kind="flow",
                      regime="non-degenerate" if kind == "reg" else "degenerate")


def limit_sde(
    obj: NoisyObjective, w0: Tensor, tau: float | Sequence[float], dtau: float = 1e-2, paths: int = 10_000,
    seed: int = 0, *, observables: Mapping[str, Observable] | None = None, threads: str | int = "auto",
) -> Trajectory:
    """Projected Euler–Maruyama ``W ← retract(W + P_T J C^{1/2} ΔB + P_T b Δτ₂)`` on τ₂ = α²σ²k, ΔB from
    generator ``theory.sde``. Only the tangential drift is added; the retraction supplies the normal Itô term.
    With P_T J = 0 this is projected Euler on the deterministic drift."""
    w0 = as_batch(w0)[:1]
    obj.bind(w0)
    Z = ZeroLossSet(obj)
    W = Z.retract(w0).repeat(paths, 1)
    Croot = None
    if obj.C is not None:
        ev, V = torch.linalg.eigh(obj.C.to(W.dtype))
        Croot = V @ torch.diag(ev.clamp_min(0).sqrt()) @ V.T
    gen = generator(seed, "theory.sde")
    times = record_times(tau)
    ws, obs = [W.clone()], [_eval_obs(observables, W)]
    with threads_for(threads, paths * W.shape[1]):
        for h, rec in _grid(times, dtau):
            W = _sde_step(obj, Z, W, h, gen, Croot)
            if rec:
                ws.append(W.clone())
                obs.append(_eval_obs(observables, W))
    out = {k: torch.stack([o[k] for o in obs]) for k in (observables or {})}
    return Trajectory(torch.tensor(times, dtype=torch.float64), torch.stack(ws), out, kind="sde", regime="degenerate")


def _sde_step(obj: NoisyObjective, Z: ZeroLossSet, W: Tensor, h: float, gen: torch.Generator,
              Croot: Tensor | None) -> Tensor:
    """One projected Euler–Maruyama step."""
    paths, m = W.shape[0], obj._need_m()
    PT = Z.tangent_projector(W)
    J = noise_jacobian(obj, W)
    dB = torch.randn(paths, m, generator=gen, dtype=W.dtype) * math.sqrt(h)
    if Croot is not None:
        dB = dB @ Croot.T
    noise = (PT @ (J @ dB[..., None]))[..., 0]
    return Z.retract(W + noise + h * tangential_drift(obj, Z, W, PT=PT, J=J))


def limit(obj: NoisyObjective, w0: Tensor, tau: float | Sequence[float], regime: str = "auto", **kw) -> Trajectory:
    """The predicted limit from Φ(w₀): projected gradient flow of Reg (non-degenerate), deterministic drift
    flow (degenerate with P_T J = 0), the SDE otherwise, or a constant path (trivial)."""
    w0 = as_batch(w0)[:1]
    obj.bind(w0)
    Z = ZeroLossSet(obj)
    start = Z.phi(w0)
    if regime == "auto":
        regime = classify(obj, start).regime
    if regime == "non-degenerate":
        return limit_flow(obj, start, tau, field="reg", **kw)
    if regime == "degenerate":
        J = noise_jacobian(obj, start)
        PTJ = Z.tangent_projector(start) @ J
        if float(PTJ.abs().max()) <= 1e-10 * (1 + float(J.abs().max())):
            return limit_flow(obj, start, tau, field="drift", **kw)
        return limit_sde(obj, start, tau, **kw)
    if regime == "trivial":
        times = record_times(tau)
        obs = kw.get("observables") or {}
        vals = _eval_obs(obs, start)
        out = {k: torch.stack([v] * len(times)) for k, v in vals.items()}
        return Trajectory(torch.tensor(times, dtype=torch.float64), start.expand(len(times), 1, -1).clone(), out,
                          kind="constant", regime="trivial")
    raise ConfigError(f"regime must be 'auto', 'non-degenerate', 'degenerate' or 'trivial', got {regime!r}")
