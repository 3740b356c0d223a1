"""PNG figures of the optimizer benchmark: learning curves and gaps with seed bands, R-SGD's Γ and reset
fraction, and the cost bars (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from dicelab.optim.bench import BenchResult, RunCurve

__all__ = ["render_all", "curves_png", "gap_png", "gamma_png", "cost_png"]


def _stack(runs: list[RunCurve], key: str) -> np.ndarray:
    """Seeds × epochs array of a curve (None → nan)."""
    return np.array([[np.nan if v is None else v for v in getattr(r, key)] for r in runs], dtype=float)


def _band(ax, x: np.ndarray, values: np.ndarray, color: str, label: str, floor: float | None = None) -> None:
    """Median line and min-max band over seeds."""
    if floor is not None:
        values = np.maximum(values, floor)
    with np.errstate(all="ignore"):
        med, lo, hi = np.nanmedian(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)
    ax.plot(x, med, color=color, lw=1.4, label=label)
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)


def _by_optimizer(result: BenchResult, task: str) -> dict[str, list[RunCurve]]:
    out: dict[str, list[RunCurve]] = {}
    for r in result.runs:
        if r.task == task:
            out.setdefault(r.optimizer, []).append(r)
    return out


def _colors(names: list[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


def curves_png(result: BenchResult, task: str, path: Path) -> Path:
    """Training error (log y) and test error vs step; dashed line at e*, ticks at each optimizer's median
    steps to e*."""
    groups = _by_optimizer(result, task)
    colors = _colors(list(groups))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    n_train = None
    for name, runs in groups.items():
        spe = runs[0].steps_per_epoch
        x = np.arange(runs[0].epochs + 1) * spe
        n_train = runs[0].train_size
        floor = 0.5 / n_train  # zero error is drawn at half a sample
        _band(ax1, x, _stack(runs, "train_error"), colors[name], name, floor)
        _band(ax2, x, _stack(runs, "test_error"), colors[name], name)
        summary = result.summary(task, name, "steps_to_target")
        if summary and np.isfinite(summary[0]):
            ax1.plot([summary[0]], [floor], marker="|", ms=14, mew=2, color=colors[name])
    sgd = [m["target"] for m in result.rows(task) if m["optimizer"] == "sgd" and m["target"] is not None]
    if sgd:
        ax1.axhline(max(float(np.median(sgd)), 0.5 / (n_train or 1)), ls="--", color="k", lw=1,
                    label="e* (SGD final, median)")
    ax1.set_yscale("log")
    ax1.set(xlabel="step", ylabel="training error (full set, eval mode)", title=f"{task}: training error")
    ax2.set(xlabel="step", ylabel="test error", title=f"{task}: test error")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def gap_png(result: BenchResult, task: str, path: Path) -> Path:
    """Generalization gap (test − training error) vs step, median and min-max over seeds."""
    groups = _by_optimizer(result, task)
    colors = _colors(list(groups))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in groups.items():
        x = np.arange(runs[0].epochs + 1) * runs[0].steps_per_epoch
        _band(ax, x, _stack(runs, "test_error") - _stack(runs, "train_error"), colors[name], name)
    ax.set(xlabel="step", ylabel="test error - training error", title=f"{task}: generalization gap")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def gamma_png(result: BenchResult, task: str, path: Path) -> Path | None:
    """R-SGD's Γ(t) and the measured reset fraction 1 − mean(b) per step (median over seeds)."""
    runs = [r for r in result.runs if r.task == task and r.optimizer == "rsgd" and r.gamma]
    if not runs:
        return None
    n = min(len(r.gamma) for r in runs)
    x = np.arange(n)
    gamma = np.array(runs[0].gamma[:n])
    resets = np.array([r.reset_fraction[:n] for r in runs], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, np.median(resets, 0), lw=0.6, color="tab:orange", alpha=0.8, label="measured reset fraction (median)")
    ax.plot(x, gamma, color="tab:blue", lw=1.6, label="Γ(t)")
    ax.plot(x, 1 - gamma, "k--", lw=1, label="1 - Γ(t) (expected reset fraction)")
    ax.set(xlabel="step", ylabel="probability", ylim=(-0.02, 1.02), title=f"{task}: R-SGD reinforcement")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost_png(result: BenchResult, path: Path) -> Path:
    """Optimizer-state memory (multiple of P) and the two time ratios, per task and optimizer."""
    tasks = [t for t in result.settings["tasks"] if any(m["task"] == t for m in result.metrics)]
    names = result.settings["optimizers"]
    colors = _colors(names)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    width = 0.8 / max(len(names), 1)
    panels = (("state_multiple_of_p", "optimizer state (x P)"), ("step_ratio", "step() time / SGD momentum"),
              ("iteration_ratio", "iteration time / SGD momentum"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for j, name in enumerate(names):
            vals = []
            for t in tasks:
                rows = [m[key] for m in result.metrics if m["task"] == t and m["optimizer"] == name]
                vals.append(rows[0] if rows and rows[0] is not None else np.nan)
            ax.bar(np.arange(len(tasks)) + j * width, vals, width, color=colors[name], label=name)
        if key != "state_multiple_of_p":
            ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(tasks)) + width * (len(names) - 1) / 2, tasks, fontsize=8)
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_all(result: BenchResult, out: Path) -> list[Path]:
    """Every figure of ``result`` into ``out``; returns the paths written."""
    files: list[Path] = []
    for task in result.settings["tasks"]:
        if not any(r.task == task for r in result.runs):
            continue
        files.append(curves_png(result, task, out / f"curves_{task}.png"))
        files.append(gap_png(result, task, out / f"gap_{task}.png"))
        g = gamma_png(result, task, out / f"gamma_{task}.png")
        if g is not None:
            files.append(g)
    files.append(cost_png(result, out / "cost.png"))
    return files
