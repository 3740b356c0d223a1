"""E3: Dropout and DropConnect on a scalar two-layer linear net (width 2), non-degenerate, trajectories.

f = Σ_j a_j b_j, x = y = 1, Γ = {Σ p_j = 1}, p_j = a_j b_j; Reg = Σ p_j² (DropConnect), ½ Σ p_j² (Dropout).
"""

from __future__ import annotations

from typing import Any

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
from dicelab.theory.limit import limit_flow
from dicelab.theory.losses import scalar_linear_net
from dicelab.theory.noise import dropconnect, dropout
from dicelab.theory.objective import NoisyObjective, SquaredLoss
from dicelab.theory.simulate import simulate
from dicelab.theory.timescale import alpha_sweep

W0 = (1.0, 0.5, 0.8, 0.4)  # a = (1, 0.5), b = (0.8, 0.4): p0 = (0.8, 0.2), delta = (0.36, 0.09)
REFERENCE_P1 = {  # §13 reference p1 at tau1 = 0.25, 0.5, 1, 2
    "dropconnect": {0.25: 0.7053, 0.5: 0.6307, 1.0: 0.5485, 2.0: 0.5062},
    "dropout": {0.25: 0.7512, 0.5: 0.7053, 1.0: 0.6307, 2.0: 0.5485},
}


def p(w: Tensor) -> Tensor:
    """p_j = a_j b_j, (S, 2)."""
    return w[:, :2] * w[:, 2:]


def p1(w: Tensor) -> Tensor:
    return w[:, 0] * w[:, 2]


def delta(w: Tensor) -> Tensor:
    """δ_j = a_j² − b_j², conserved by the τ₁ limit."""
    return w[:, :2] ** 2 - w[:, 2:] ** 2


def make(noise: str, sigma: float, dist: str = "gauss") -> NoisyObjective:
    """The E3 objective: ``noise`` 'dropconnect' (all four weights) or 'dropout' (both hidden units)."""
    model_fn, X, y = scalar_linear_net(2)
    if noise == "dropconnect":
        return dropconnect(SquaredLoss(model_fn, X, y, d=4), sigma=sigma, dist=dist)
    return dropout(model_fn, X, y, units=2, sigma=sigma, dist=dist)


def run_e3(mode: str, seed: int, ov: dict[str, Any]) -> ExperimentResult:
    cfg: dict[str, Any] = {
        "chains": 2000, "taus": [0.25, 0.5, 0.75, 1.0],
        "sigmas": [0.2, 0.1] if mode == "fast" else [0.2, 0.1, 0.05],
        "alphas": [0.02] if mode == "fast" else [0.04, 0.02],
        "sweep_alphas": [0.04, 0.02, 0.01], "bernoulli_sigma": 0.2,
    }
    cfg.update(ov)
    w0 = torch.tensor(W0, dtype=torch.float64)
    obs = {"p": p, "delta": delta}
    lim = {nz: limit_flow(make(nz, 0.1), w0, [0.05 * i for i in range(1, 41)], dtau=0.025, observables=obs)
           for nz in ("dropconnect", "dropout")}
    m: dict[str, Any] = {}
    for nz, tr in lim.items():
        for t in (0.25, 0.5, 1.0, 2.0):
            m[f"limit_p1[{nz}]@{t:g}"] = float(tr.at("p", t)[0])
        m[f"limit_reg[{nz}]@1"] = float(tr.observables["Reg"][int((tr.tau - 1.0).abs().argmin()), 0])
        m[f"limit_delta_drift[{nz}]"] = float((tr.observables["delta"][:, 0] - tr.observables["delta"][0, 0]).abs().max())
        reg_series = tr.observables["Reg"][:, 0]
        m[f"limit_reg_max_increase[{nz}]"] = float((reg_series[1:] - reg_series[:-1]).max())
    sims: dict[tuple[str, float, float, str], Any] = {}
    for nz in ("dropconnect", "dropout"):
        for s in cfg["sigmas"]:
            for a in cfg["alphas"]:
                dists = ["gauss", "bernoulli"] if s == cfg["bernoulli_sigma"] else ["gauss"]
                for dist in dists:
                    if dist == "bernoulli" and a != cfg["alphas"][-1]:
                        continue
                    sim = simulate(make(nz, s, dist), w0, a, tau=cfg["taus"], regime="non-degenerate",
                                   chains=cfg["chains"], seed=seed, observables=obs)
                    sims[(nz, s, a, dist)] = sim
                    idx = [int((lim[nz].tau - t).abs().argmin()) for t in sim.tau]
                    lp = lim[nz].observables["p"][idx, 0]  # (R, 2)
                    key = f"[{nz},sigma={s:g},alpha={a:g},{dist}]"
                    m["proj_err" + key] = float((sim.proj["p"].mean - lp).abs().max())
                    m["raw_err" + key] = float((sim.raw["p"].mean - lp).abs().max())
                    m["delta_drift" + key] = float((sim.proj["delta"].mean[-1] - sim.proj["delta"].mean[0]).abs().max())
                    m["sd_p1@1" + key] = float(sim.proj["p"].sd[-1, 0])
    dc = make("dropconnect", 0.2)
    sw = alpha_sweep(dc, w0, cfg["sweep_alphas"], p1, 0.6, chains=cfg["chains"], seed=seed, regime="non-degenerate",
                     tau_max=1.0)
    m.update({"sweep_alphas": sw.alphas, "k_star": sw.k_star, "tau_star": sw.tau_star, "slope": sw.slope,
              "slope_se": sw.slope_se, "sweep_runtime": sw.runtime_s})
    checks = []
    for nz in ("dropconnect", "dropout"):
        dev = max(abs(m[f"limit_p1[{nz}]@{t:g}"] - ref) for t, ref in REFERENCE_P1[nz].items())
        checks.append(check(f"E3 limit p1 reproduces the reference values [{nz}]", dev, dev <= 1e-4, "<= 1e-4"))
        checks.append(check(f"E3 limit conserves delta_j [{nz}]", m[f"limit_delta_drift[{nz}]"],
                            m[f"limit_delta_drift[{nz}]"] <= 1e-8, "<= 1e-8"))
    dreg = abs(m["limit_reg[dropconnect]@1"] - 0.50470)
    checks.append(check("E3 limit DropConnect Reg(1) = 0.50470", dreg, dreg <= 1e-4, "<= 1e-4"))
    for (nz, s, a, dist), _ in sims.items():
        if dist != "gauss":
            continue
        key = f"[{nz},sigma={s:g},alpha={a:g},{dist}]"
        tol = min(0.01, 0.1 * s * s + 0.002) if mode == "fast" else 0.1 * s * s + 0.002
        checks.append(check(f"E3 projected max error of p {key}", m["proj_err" + key], m["proj_err" + key] <= tol,
                            f"<= {tol:.4g}"))
    a_last = cfg["alphas"][-1]
    kd = f"[dropconnect,sigma=0.2,alpha={a_last:g},gauss]"
    if "proj_err" + kd in m:
        q = m["raw_err" + kd] / m["proj_err" + kd]
        checks.append(check(f"E3 DropConnect raw/projected error {kd}", q, q >= 2, ">= 2"))
    drift = max(v for k, v in m.items() if k.startswith("delta_drift"))
    checks.append(check("E3 max delta_j drift", drift, drift <= 0.02, "<= 0.02"))
    for nz in ("dropconnect", "dropout"):
        bs = cfg["bernoulli_sigma"]
        kg, kb = (nz, bs, a_last, "gauss"), (nz, bs, a_last, "bernoulli")
        if kg in sims and kb in sims:
            dgb = float((sims[kg].proj["p"].mean - sims[kb].proj["p"].mean).abs().max())
            m[f"bernoulli_vs_gauss[{nz}]"] = dgb
            checks.append(check(f"E3 Bernoulli vs Gaussian projected means [{nz}]", dgb, dgb <= 0.005, "<= 0.005"))
    tol_s = 0.15 if mode == "fast" else 0.05
    checks.append(check(f"E3 sweep slope -1 ± {tol_s}", sw.slope, abs(sw.slope + 1) <= tol_s,
                        f"[{-1 - tol_s}, {-1 + tol_s}]"))
    i02 = sw.alphas.index(0.02) if 0.02 in sw.alphas else len(sw.alphas) - 1
    ts = sw.tau_star[i02]
    checks.append(check(f"E3 tau1* (p1 = 0.6) at alpha={sw.alphas[i02]:g} within 0.05 of 0.6384", ts,
                        abs(ts - 0.6384) <= 0.05, "0.6384 ± 0.05"))
    if mode == "full":
        k4, k2 = "sd_p1@1[dropconnect,sigma=0.2,alpha=0.04,gauss]", "sd_p1@1[dropconnect,sigma=0.2,alpha=0.02,gauss]"
        if k4 in m and k2 in m:
            q = m[k4] / m[k2]
            checks.append(check("E3 seed SD ratio alpha 0.04/0.02 (sigma=0.2)", q, 1.2 <= q <= 1.7, "[1.2, 1.7]"))
    series = []
    for nz in ("dropconnect", "dropout"):
        curves = []
        for (n2, s, a, dist), sim in sims.items():
            if n2 == nz and dist == "gauss":
                curves.append(curve(f"sigma={s:g}, alpha={a:g}", [0.0, *sim.tau.tolist()[1:]], sim.proj["p"].mean[:, 0],
                                    sim.proj["p"].se[:, 0], sim.proj["p"].sd[:, 0], sim.raw["p"].mean[:, 0]))
        tr = lim[nz]
        series.append(overlay_series(f"E3_overlay_{nz}", f"E3 {nz}: p1 vs projected Reg flow", "tau1 = alpha sigma^2 k",
                                     "p1 = a1 b1", curves, tr.tau, tr.mean("p")[:, 0]))
    series.append(loglog_series("E3_timescale", "E3 DropConnect (sigma=0.2): steps to p1 = 0.6", "alpha", "k*",
                                sw.alphas, sw.k_star, sw.slope, sw.slope_se))
    return ExperimentResult("E3", mode, seed, cfg, m, checks, 0.0, series)


register(Experiment("E3", "Dropout/DropConnect on a width-2 scalar linear net: p_j follow the Reg flow",
                    "dropout, dropconnect", "non-degenerate", "-1", "~12 s", run_e3))
