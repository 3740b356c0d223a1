"""E1 (label noise, degenerate) and E2/E2b (weight noise, non-degenerate; DropConnect control) on
L = ½(w₁w₂ − 1)², observable D = w₁² − w₂² (limits D₀e^{−τ₂} and D₀e^{−2τ₁})."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dicelab.theory.experiments._base import (
    Experiment,
    ExperimentResult,
    check,
    curve,
    loglog_series,
    overlay_series,
    register,
)
from dicelab.theory.limit import limit
from dicelab.theory.losses import product_loss
from dicelab.theory.noise import dropconnect, label_noise, weight_noise
from dicelab.theory.objective import NoisyObjective
from dicelab.theory.simulate import simulate
from dicelab.theory.timescale import alpha_sweep

W0 = (2.0, 0.5)
D0 = 3.75


def D(w: Tensor) -> Tensor:
    """D = w₁² − w₂² (invariant of the flow on the hyperbola up to the slow drift)."""
    return w[:, 0] ** 2 - w[:, 1] ** 2


def _tau_star(tr_tau: Tensor, tr_D: Tensor, level: float) -> float:
    """Crossing time of the limit, interpolating log D (exact for exponentials)."""
    ld = np.log(tr_D.numpy())
    t = tr_tau.numpy()
    i = int(np.flatnonzero(ld <= math.log(level))[0])
    return float(t[i - 1] + (ld[i - 1] - math.log(level)) / (ld[i - 1] - ld[i]) * (t[i] - t[i - 1]))


def _main_runs(obj: NoisyObjective, alphas: list[float], chains: int, seed: int, tau_end: float,
               regime: str) -> tuple[list[Any], dict[str, Any]]:
    grid = [round(0.1 * i * tau_end, 10) for i in range(1, 11)]
    sims, metrics = [], {}
    for a in alphas:
        sim = simulate(obj, torch.tensor(W0, dtype=torch.float64), a, tau=grid, regime=regime, chains=chains, seed=seed,
                       observables={"D": D})
        ratio = float(sim.proj["D"].mean[-1]) / D0
        metrics[f"ratio@{a:g}"] = ratio
        metrics[f"rate@{a:g}"] = -math.log(ratio) / tau_end
        metrics[f"rate_raw@{a:g}"] = -math.log(float(sim.raw["D"].mean[-1]) / D0) / tau_end
        metrics[f"runtime@{a:g}"] = sim.runtime_s
        metrics[f"steps@{a:g}"] = sim.total_steps
        sims.append(sim)
    return sims, metrics


def _overlay(name: str, sims: list[Any], tr: Any, xlabel: str, title: str) -> dict[str, Any]:
    curves = [curve(f"alpha={s.alpha:g}", s.tau, s.proj["D"].mean / D0, s.proj["D"].se / D0, s.proj["D"].sd / D0,
                    s.raw["D"].mean / D0) for s in sims]
    return overlay_series(name, title, xlabel, "E D / D0", curves, tr.tau, tr.mean("D") / D0)


def _rate_checks(exp: str, target: float, fast_tol: float, calib: dict[float, float], slope: float,
                 m: dict[str, Any], cfg: dict[str, Any], sw: Any, mode: str) -> list[Any]:
    """Checks shared by E1 and E2: the decay rate of D in rescaled time and the alpha-exponent of the sweep.

    fast: rate within ``fast_tol`` of ``target`` at the first alpha, slope within 0.15 of ``slope``;
    full: rates within 0.015 of the calibration, |rate - target| shrinking 1.5-2.7x per halving of alpha,
    slope within 0.03.
    """
    checks = []
    if mode == "fast":
        a0 = cfg["alphas"][0]
        r = m[f"rate@{a0:g}"]
        checks.append(check(f"{exp} rate at alpha={a0:g}: {target:g} ± {fast_tol:g}", r, abs(r - target) <= fast_tol,
                            f"{target:g} ± {fast_tol:g} (calibration {calib.get(a0, 'n/a')})"))
        checks.append(check(f"{exp} sweep slope {slope:g} ± 0.15", sw.slope, abs(sw.slope - slope) <= 0.15,
                            f"[{slope - 0.15:g}, {slope + 0.15:g}]"))
        return checks
    for a in cfg["alphas"]:
        if a in calib:
            r = m[f"rate@{a:g}"]
            checks.append(check(f"{exp} rate at alpha={a:g} within ±0.015 of {calib[a]}", r,
                                abs(r - calib[a]) <= 0.015, f"{calib[a]} ± 0.015"))
    errs = [abs(m[f"rate@{a:g}"] - target) for a in cfg["alphas"]]
    for i in range(len(errs) - 1):
        q = errs[i] / errs[i + 1]
        checks.append(check(f"{exp} |rate-{target:g}| shrink per halving "
                            f"({cfg['alphas'][i]:g}->{cfg['alphas'][i + 1]:g})", q, 1.5 <= q <= 2.7, "[1.5, 2.7]"))
    checks.append(check(f"{exp} sweep slope {slope:.2f} ± 0.03", sw.slope, abs(sw.slope - slope) <= 0.03,
                        f"[{slope - 0.03:.2f}, {slope + 0.03:.2f}]"))
    return checks


def run_e1(mode: str, seed: int, ov: dict[str, Any]) -> ExperimentResult:
    cfg: dict[str, Any] = {
        "sigma": 1.0, "chains": 2000, "tau": 1.0,
        "alphas": [0.02] if mode == "fast" else [0.02, 0.01, 0.005],
        "sweep_alphas": [0.04, 0.02, 0.01] if mode == "fast" else [0.02, 0.01, 0.005],
    }
    cfg.update(ov)
    L = product_loss()
    obj = label_noise(L.model_fn, None, torch.ones(1), sigma=cfg["sigma"])
    tr = limit(obj, torch.tensor(W0, dtype=torch.float64), [0.05 * i for i in range(1, 21)], observables={"D": D}, dtau=0.05)
    sims, m = _main_runs(obj, cfg["alphas"], cfg["chains"], seed, cfg["tau"], "degenerate")
    m["limit_ratio@1"] = float(tr.at("D", 1.0)) / D0
    tau_star = _tau_star(tr.tau, tr.mean("D"), D0 / 2)
    sw = alpha_sweep(obj, torch.tensor(W0, dtype=torch.float64), cfg["sweep_alphas"], D, D0 / 2, chains=cfg["chains"], seed=seed,
                     regime="degenerate", tau_max=1.5 * tau_star)
    pred = [math.log(2) / (a**2 * cfg["sigma"] ** 2) for a in sw.alphas]
    m.update({"sweep_alphas": sw.alphas, "k_star": sw.k_star, "k_star_pred": pred, "slope": sw.slope,
              "slope_se": sw.slope_se, "pairwise_slopes": sw.pairwise, "sweep_regime": sw.regime,
              "sweep_runtime": sw.runtime_s, "tau_star_limit": tau_star})
    checks = _rate_checks("E1", 1.0, 0.05, {0.02: 1.031, 0.01: 1.015, 0.005: 1.008}, -2.0, m, cfg, sw, mode)
    worst = max(abs(k / p - 1) for k, p in zip(sw.k_star, pred, strict=True))
    checks.append(check("E1 each k* within 10% of ln2/(alpha^2 sigma^2)", worst, worst <= 0.10, "max rel. dev <= 0.10"))
    checks.append(check("E1 alpha_sweep labels degenerate", float(sw.slope), sw.regime == "degenerate",
                        "regime == degenerate"))
    series = [
        _overlay("E1_overlay", sims, tr, "tau2 = alpha^2 sigma^2 k", "E1 label noise: D / D0 vs exp(-tau2)"),
        loglog_series("E1_timescale", "E1: steps to halve D", "alpha", "k*", sw.alphas, sw.k_star, sw.slope,
                      sw.slope_se),
    ]
    return ExperimentResult("E1", mode, seed, cfg, m, checks, 0.0, series)


def run_e2(mode: str, seed: int, ov: dict[str, Any]) -> ExperimentResult:
    cfg: dict[str, Any] = {
        "sigma": 0.1, "chains": 2000, "tau": 1.0,
        "alphas": [0.02] if mode == "fast" else [0.02, 0.01, 0.005],
        "sweep_alphas": [0.04, 0.02, 0.01] if mode == "fast" else [0.02, 0.01, 0.005],
        "e2b_alphas": [0.02] if mode == "fast" else [0.02, 0.01, 0.005],
    }
    cfg.update(ov)
    L = product_loss()
    obj = weight_noise(L, cfg["sigma"])
    tr = limit(obj, torch.tensor(W0, dtype=torch.float64), [0.05 * i for i in range(1, 21)], observables={"D": D}, dtau=0.05)
    sims, m = _main_runs(obj, cfg["alphas"], cfg["chains"], seed, cfg["tau"], "non-degenerate")
    m["limit_ratio@1"] = float(tr.at("D", 1.0)) / D0
    tau_star = _tau_star(tr.tau, tr.mean("D"), D0 / 2)
    sw = alpha_sweep(obj, torch.tensor(W0, dtype=torch.float64), cfg["sweep_alphas"], D, D0 / 2, chains=cfg["chains"], seed=seed,
                     regime="non-degenerate", tau_max=1.5 * tau_star)
    pred = [math.log(2) / (2 * a * cfg["sigma"] ** 2) for a in sw.alphas]
    m.update({"sweep_alphas": sw.alphas, "k_star": sw.k_star, "k_star_pred": pred, "slope": sw.slope,
              "slope_se": sw.slope_se, "pairwise_slopes": sw.pairwise, "sweep_regime": sw.regime,
              "sweep_runtime": sw.runtime_s, "tau_star_limit": tau_star})
    # E2b control: DropConnect on both weights, Reg = (w1 w2)^2 constant on Γ -> degenerate
    dc = dropconnect(L, sigma=cfg["sigma"], dist="gauss", eta_degree=4)
    for a in cfg["e2b_alphas"]:
        s = simulate(dc, torch.tensor(W0, dtype=torch.float64), a, tau=[cfg["tau"]], regime="non-degenerate", chains=cfg["chains"],
                     seed=seed, observables={"D": D})
        x = -math.log(float(s.proj["D"].mean[-1]) / D0)
        m[f"e2b_rate_tau1@{a:g}"] = x / cfg["tau"]
        m[f"e2b_rate_tau2@{a:g}"] = x / (cfg["tau"] * a)
    checks = _rate_checks("E2", 2.0, 0.1, {0.02: 2.052, 0.01: 2.027, 0.005: 2.014}, -1.0, m, cfg, sw, mode)
    if mode == "full":
        r = [m[f"e2b_rate_tau1@{a:g}"] for a in cfg["e2b_alphas"]]
        for i in range(len(r) - 1):
            q = r[i] / r[i + 1]
            checks.append(check(f"E2b tau1-rate ratio per halving ({cfg['e2b_alphas'][i]:g})", q,
                                abs(q - 2) <= 0.3, "2 ± 0.3"))
    checks.append(check("E2 alpha_sweep labels non-degenerate", sw.slope, sw.regime == "non-degenerate",
                        "regime == non-degenerate"))
    a_b = cfg["e2b_alphas"][0]
    r1, r2 = m[f"e2b_rate_tau1@{a_b:g}"], m[f"e2b_rate_tau2@{a_b:g}"]
    checks.append(check(f"E2b rate per tau1 unit at alpha={a_b:g} <= 0.1", r1, r1 <= 0.1, "<= 0.1 (calib. 0.043)"))
    checks.append(check(f"E2b rate per tau2 unit at alpha={a_b:g} in [1.8, 2.3]", r2, 1.8 <= r2 <= 2.3,
                        "[1.8, 2.3] (calib. 2.14)"))
    series = [
        _overlay("E2_overlay", sims, tr, "tau1 = alpha sigma^2 k", "E2 weight noise: D / D0 vs exp(-2 tau1)"),
        loglog_series("E2_timescale", "E2: steps to halve D", "alpha", "k*", sw.alphas, sw.k_star, sw.slope,
                      sw.slope_se),
    ]
    return ExperimentResult("E2", mode, seed, cfg, m, checks, 0.0, series)


register(Experiment("E1", "label noise on w1*w2=1: D decays as exp(-tau2)", "label noise (gauss)", "degenerate",
                    "-2", "~10 s", run_e1))
register(Experiment("E2", "weight noise on w1*w2=1: D decays as exp(-2 tau1); E2b DropConnect control",
                    "weight noise / DropConnect", "non-degenerate", "-1", "~12 s", run_e2))
