"""PNG figures of ``dicelab.symmetry`` (matplotlib, Agg backend): interpolation curves, the Hessian spectrum
with its gradient noise, and measured versus predicted variance per direction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_interpolation", "plot_spectrum", "plot_variance", "plot_count_vs_width"]

_LABELS = {"before": "naive", "after": "aligned (weight)", "after_activation": "aligned (activation)",
           "after_repair": "aligned + REPAIR", "before_repair": "naive + REPAIR"}


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_interpolation(result: Any, path: str | Path) -> Path:
    """Loss (left) and accuracy (right) along t for every curve of a BarrierResult; train solid, test dashed;
    the title names the barrier kind and the train-loss barriers."""
    d = result.to_dict() if hasattr(result, "to_dict") else result
    t = np.asarray(d["t"])
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, curve) in enumerate(d["curves"].items()):
        col = colors[i % len(colors)]
        label = _LABELS.get(name, name)
        for split, style in (("train", "-"), ("test", "--")):
            if f"{split}_loss" in curve:
                ax_l.plot(t, curve[f"{split}_loss"], style, color=col, label=f"{label} ({split})")
                ax_a.plot(t, 1 - np.asarray(curve[f"{split}_error"]), style, color=col, label=f"{label} ({split})")
    ax_l.set_xlabel("t (0 = A, 1 = B)")
    ax_l.set_ylabel("mean loss")
    ax_a.set_xlabel("t (0 = A, 1 = B)")
    ax_a.set_ylabel("accuracy")
    for ax in (ax_l, ax_a):
        ax.grid(True, alpha=0.3)
    ax_a.legend(fontsize=7)
    vals = ", ".join(f"{_LABELS.get(n, n)} {b['train_loss']:.3f}" for n, b in d["barriers"].items())
    fig.suptitle(f"{d['kind']} train-loss barrier: {vals}", fontsize=9)
    return _save(fig, path)


def plot_spectrum(eigvals: Sequence[float], path: str | Path, *, s: Sequence[float] | None = None,
                  trace: tuple[float, float] | None = None) -> Path:
    """Top-k eigenvalues as bars, the gradient noise s_i on a twin axis, tr(H) ± SE in the title."""
    lam = np.asarray(eigvals, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    idx = np.arange(1, len(lam) + 1)
    ax.bar(idx, lam, color="tab:blue", alpha=0.7, label="λ_i")
    ax.set_xlabel("direction i")
    ax.set_ylabel("Hessian eigenvalue λ_i")
    if s is not None:
        ax2 = ax.twinx()
        ax2.plot(idx, np.asarray(s, dtype=float), "o-", color="tab:red", label="s_i = q_iᵀSq_i")
        ax2.set_ylabel("gradient noise s_i")
    title = "Hessian top-k spectrum"
    if trace is not None:
        title += f" — tr(H) = {trace[0]:.4g} ± {trace[1]:.2g}"
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_variance(tables: Sequence[Any], path: str | Path) -> Path:
    """Measured vs predicted σ_i² (log-log, y = x and ±15 % band), one marker per reading/noise source; second
    panel: ratio vs ηλ_i."""
    fig, (ax, ax_r) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    lo, hi = np.inf, -np.inf
    markers = iter("osD^v<>p")
    for tab in tables:
        d = tab.to_dict() if hasattr(tab, "to_dict") else tab
        rows = d["rows"]
        if d["reading"] == "B2":
            series = [("B2, noise on trajectory", "sigma2_B2", "sigma2_measured", "ratio_B2"),
                      ("B2, noise at θ*", "sigma2_B2_theta_star", "sigma2_measured", "ratio_B2_theta_star")]
            if d["settings"].get("noise_at") == "theta_star":
                series = series[1:]
        else:
            series = [("B1 bootstrap", "var_B1_pred", "var_B1_measured", "ratio_B1")]
        for label, pk, mk, rk in series:
            pred = np.asarray([r[pk] for r in rows], dtype=float)
            meas = np.asarray([r[mk] for r in rows], dtype=float)
            m = next(markers, "o")
            st = d["settings"]
            tag = (f"{label} (D={st.get('D')}, ηλmax={st.get('eta_lambda_max', float('nan')):.2g})"
                   if d["reading"] == "B2" else f"{label} (D={st.get('D')})")
            ax.loglog(pred, meas, m, ms=6, label=tag)
            lo, hi = min(lo, pred.min(), meas.min()), max(hi, pred.max(), meas.max())
            if d["reading"] == "B2":
                ax_r.plot([r["eta_lambda"] for r in rows], [r[rk] for r in rows], m + "-", label=tag)
    if np.isfinite(lo):
        xx = np.geomspace(lo / 1.5, hi * 1.5, 20)
        ax.loglog(xx, xx, "k-", lw=1, label="y = x")
        ax.fill_between(xx, xx * 0.85, xx * 1.15, color="gray", alpha=0.2, label="±15 %")
    ax.set_xlabel("predicted σ_i²")
    ax.set_ylabel("measured σ_i²")
    ax.set_title("variance along top Hessian directions", fontsize=9)
    ax.legend(fontsize=7)
    ax_r.axhline(1.0, color="k", lw=1)
    ax_r.set_xlabel("ηλ_i")
    ax_r.set_ylabel("measured / predicted")
    ax_r.set_title("ratio vs ηλ_i (SGD reading B2)", fontsize=9)
    for a in (ax, ax_r):
        a.grid(True, alpha=0.3, which="both")
    if ax_r.get_legend_handles_labels()[0]:
        ax_r.legend(fontsize=7)
    return _save(fig, path)


def plot_count_vs_width(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """log10|G| (left) and train-loss barriers naive / aligned (right) against the hidden width."""
    fig, (ax, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for task in sorted({r["task"] for r in rows}):
        sel = [r for r in rows if r["task"] == task]
        w = [r["width"] for r in sel]
        ax.plot(w, [r["log10_count"] for r in sel], "o-", label=task)
        ax_b.plot(w, [r["naive"] for r in sel], "o-", label=f"{task} naive")
        ax_b.plot(w, [r["weight"] for r in sel], "s--", label=f"{task} weight matching")
        if "repair" in sel[0]:
            ax_b.plot(w, [r["repair"] for r in sel], "^:", label=f"{task} + REPAIR")
    ax.set_xscale("log", base=2)
    ax_b.set_xscale("log", base=2)
    ax.set_xlabel("hidden width h")
    ax.set_ylabel("log10 |G| (permutation copies)")
    ax_b.set_xlabel("hidden width h")
    ax_b.set_ylabel("sup_linear train-loss barrier")
    for a in (ax, ax_b):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=7)
    return _save(fig, path)
