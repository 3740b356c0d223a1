"""PNG figures of runs and sweeps (spec 04 §10), re-rendered from the CSVs they wrote.

1. RLP accuracy vs epoch, one panel per tap: clean (solid), online (dashed), held-out (dotted), chance
   and its ±3 SE band; a second row with the task's train (and validation) accuracy.
2. Accuracy vs the swept value (symlog x): train, test and clean RLP accuracy (mean ± std over seeds),
   R_proxy on the right axis, diverged runs as ×; small multiples for the regulariser sweep.
3. Depth curve: final clean RLP accuracy per tap in forward order, each point labelled with d and the
   head's parameter count; one line per setting.
4. Heatmap epoch × tap of the clean RLP accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dicelab.errors import DicelabError  # noqa: E402

__all__ = ["plot", "plot_run", "plot_sweep"]


def _read_csv(path: Path):
    import pandas as pd

    if not path.exists():
        raise DicelabError(f"{path}: not found (was the run or sweep written with write=True?)")
    return pd.read_csv(path)


def _chance_band(ax: Any, n: int, m: int, x0: float, x1: float) -> None:
    c = 1.0 / n
    se = math.sqrt(c * (1 - c) / m)
    ax.axhline(c, color="grey", lw=1, label="chance 1/n")
    ax.fill_between([x0, x1], c - 3 * se, c + 3 * se, color="grey", alpha=0.15, lw=0, label="±3 SE")


def _taps_in_order(df) -> list[str]:
    if "depth" in df and df["depth"].notna().all():
        return list(df.sort_values("depth").drop_duplicates("tap")["tap"])
    return list(dict.fromkeys(df["tap"]))


def plot_run(run_dir: str | Path) -> list[Path]:
    """Figures 1, 3 and 4 of one run folder (from ``memorization_epochs.csv``)."""
    run_dir = Path(run_dir)
    df = _read_csv(run_dir / "memorization_epochs.csv")
    files: list[Path] = []
    if df.empty:
        return files
    df = df[df["set"] == 0]
    taps = _taps_in_order(df)
    fig, axes = plt.subplots(2, len(taps), figsize=(4.2 * len(taps), 6.4), squeeze=False, sharex=True)
    for j, tap in enumerate(taps):
        d = df[df["tap"] == tap].sort_values("epoch")
        ax = axes[0, j]
        x = d["epoch"].to_numpy() + 1
        _chance_band(ax, int(d["n"].iloc[0]), int(d["m"].iloc[0]), x.min(), x.max())
        if d["clean_acc"].notna().any():
            ax.plot(x, d["clean_acc"], "-", color="C0", label="clean (eval, train set)")
        ax.plot(x, d["online_acc"], "--", color="C1", label="online (train mode)")
        if d["heldout_acc"].notna().any():
            ax.plot(x, d["heldout_acc"], ":", color="C2", label="held-out (control)")
        ax.set_title(f"{tap}  (d={int(d['d'].iloc[0])}, head {int(d['head_params'].iloc[0]):,} params)", fontsize=9)
        ax.set_ylabel("RLP accuracy")
        ax2 = axes[1, j]
        ax2.plot(x, d["train_acc"], "-", color="C3", label="task train acc")
        if "val_acc" in d and d["val_acc"].notna().any():
            ax2.plot(x, d["val_acc"], "--", color="C4", label="task val acc")
        if "heldout_task_acc" in d and d["heldout_task_acc"].notna().any():
            ax2.plot(x, d["heldout_task_acc"], ":", color="C2", label="task held-out acc")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("task accuracy")
        ax2.set_ylim(0, 1.02)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle(f"RLP accuracy vs epoch — {run_dir.name}", fontsize=10)
    fig.tight_layout()
    files.append(_save(fig, run_dir / "rlp_vs_epoch.png"))
    if len(taps) > 1:
        files.append(_heatmap(df, taps, run_dir / "rlp_heatmap.png", run_dir.name))
        summ = _read_csv(run_dir / "memorization.csv")
        files.append(_depth({"run": summ[summ["set"] == 0]}, taps, run_dir / "rlp_depth.png", run_dir.name))
    return files


def _heatmap(df, taps: list[str], path: Path, title: str) -> Path:
    epochs = sorted(df["epoch"].unique())
    grid = np.full((len(taps), len(epochs)), np.nan)
    for i, tap in enumerate(taps):
        d = df[df["tap"] == tap].set_index("epoch")["clean_acc"]
        for j, e in enumerate(epochs):
            if e in d.index and not np.isnan(d[e]):
                grid[i, j] = d[e]
    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.15 * len(epochs)), 1.2 + 0.45 * len(taps)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", origin="upper",
                   extent=(0.5, len(epochs) + 0.5, len(taps) - 0.5, -0.5))
    ax.set_yticks(range(len(taps)), taps)
    ax.set_xlabel("epoch")
    fig.colorbar(im, ax=ax, label="clean RLP accuracy")
    ax.set_title(f"clean RLP accuracy, epoch × tap — {title}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _depth(frames: dict[str, Any], taps: list[str], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(taps), 4.2))
    for k, (label, df) in enumerate(frames.items()):
        ys, es = [], []
        for tap in taps:
            d = df[df["tap"] == tap]
            ys.append(d["clean_acc"].mean() if len(d) else np.nan)
            es.append(d["clean_acc"].std() if len(d) > 1 else 0.0)
        ax.errorbar(range(len(taps)), ys, yerr=es, marker="o", capsize=3, label=label, color=f"C{k % 10}")
        if k == 0:
            ref = frames[label]
            for i, tap in enumerate(taps):
                d = ref[ref["tap"] == tap]
                if len(d) and not np.isnan(ys[i]):
                    ax.annotate(f"d={int(d['d'].iloc[0])}\n{int(d['head_params'].iloc[0]):,} p", (i, ys[i]),
                                textcoords="offset points", xytext=(6, 4), fontsize=7)
    first = next(iter(frames.values()))
    n = int(first["n"].iloc[0])
    ax.axhline(1.0 / n, color="grey", lw=1, label="chance 1/n")
    ax.set_xticks(range(len(taps)), taps, rotation=20)
    ax.set_xlabel("tap (forward order)")
    ax.set_ylabel("final clean RLP accuracy")
    ax.set_title(f"RLP accuracy vs depth — {title}", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _numeric(values) -> bool:
    try:
        [float(v) for v in values]
        return True
    except (TypeError, ValueError):
        return False


def _acc_panel(ax: Any, table, runs, axis_name: str, tap: str) -> None:
    t = table[(table["tap"] == tap) & (table["set"] == 0)]
    r = runs[(runs["tap"] == tap) & (runs["set"] == 0)]
    values = [str(v) for v in t["value"]]
    numeric = _numeric(values)
    xs = np.array([float(v) for v in values]) if numeric else np.arange(len(values))
    for col, label, color in (("train_acc", "task train", "C3"), ("test_acc", "task test", "C2"),
                              ("clean_acc", "clean RLP", "C0")):
        ax.errorbar(xs, t[col], yerr=t[f"{col}_std"].fillna(0), marker="o", capsize=3, label=label, color=color)
    div = r[r["status"] == "diverged"]
    if len(div):
        dx = [float(v) if numeric else values.index(str(v)) for v in div["value"]]
        ax.scatter(dx, div["clean_acc"].fillna(0), marker="x", s=60, color="red", label="diverged", zorder=5)
    if numeric:
        pos = xs[xs > 0]
        ax.set_xscale("symlog", linthresh=float(pos.min()) if len(pos) else 1.0)
    else:
        ax.set_xticks(xs, values, rotation=15, fontsize=7)
    ax.set_xlabel(axis_name)
    ax.set_ylabel("accuracy")
    ax.set_yscale("log")
    n = int(t["n"].iloc[0])
    ax.axhline(1.0 / n, color="grey", lw=1, ls=":", label="chance 1/n")
    right = ax.twinx()
    right.plot(xs, t["r_proxy"], "s--", color="C1", ms=4, label="R_proxy (right)")
    right.set_ylabel("R_proxy", color="C1")
    right.set_ylim(bottom=min(0.0, float(np.nanmin(t["r_proxy"])) if len(t) else 0.0))
    lines, labels = ax.get_legend_handles_labels()
    l2, lab2 = right.get_legend_handles_labels()
    ax.legend(lines + l2, labels + lab2, fontsize=7, loc="lower left")


def plot_sweep(out_dir: str | Path) -> list[Path]:
    """Figures 1–3 of a sweep folder (from ``sweep_summary.csv``, ``sweep.csv``, ``sweep_epochs.csv``)."""
    out_dir = Path(out_dir)
    table, runs, epochs = (_read_csv(out_dir / f) for f in ("sweep_summary.csv", "sweep.csv", "sweep_epochs.csv"))
    files: list[Path] = []
    if table.empty:
        return files
    taps = _taps_in_order(runs)
    main = taps[-1]
    axes_present = [a for a in dict.fromkeys(table["axis"]) if a != "baseline"]
    base = table[table["axis"] == "baseline"]
    if len(base):   # regulariser sweep: one panel per regulariser, the baseline at its off value
        # the baseline is each regulariser's off value (kept as text: the value column mixes kinds)
        off = {"weight_decay": "0", "dropout": "0", "label_smoothing": "0", "augment": "none", "lam": "0"}
        fig, axs = plt.subplots(1, len(axes_present), figsize=(4.6 * len(axes_present), 4.2), squeeze=False)
        for k, axis in enumerate(axes_present):
            t = table[table["axis"] == axis]
            b = base.assign(value=off.get(axis, "0"), axis=axis)
            r = runs[runs["axis"].isin([axis, "baseline"])].copy()
            r["value"] = r["value"].astype(str)
            r.loc[r["axis"] == "baseline", "value"] = off.get(axis, "0")
            import pandas as pd

            _acc_panel(axs[0, k], pd.concat([b, t]), r, axis, main)
            axs[0, k].set_title(f"{axis} (tap {main})", fontsize=9)
        fig.suptitle(f"standard regularisers vs RLP accuracy — {out_dir.name}", fontsize=10)
        fig.tight_layout()
        files.append(_save(fig, out_dir / "acc_vs_regularizers.png"))
    else:
        axis = axes_present[0]
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        _acc_panel(ax, table, runs, "λ" if axis == "lam" else axis, main)
        ax.set_title(f"accuracy vs {axis} (tap {main}, mean ± std over seeds) — {out_dir.name}", fontsize=9)
        fig.tight_layout()
        files.append(_save(fig, out_dir / f"acc_vs_{axis}.png"))
    # clean RLP accuracy vs epoch per tap, one line per setting (mean over seeds)
    ep = epochs[epochs["set"] == 0]
    fig, axs = plt.subplots(1, len(taps), figsize=(4.6 * len(taps), 4.0), squeeze=False)
    for j, tap in enumerate(taps):
        ax = axs[0, j]
        d = ep[ep["tap"] == tap]
        for k, (label, g) in enumerate(d.groupby("setting", sort=False)):
            mean = g.groupby("epoch")["clean_acc"].mean()
            ax.plot(mean.index + 1, mean.values, "-", color=f"C{k % 10}", label=label)
        if len(d):
            _chance_band(ax, int(d["n"].iloc[0]), int(d["m"].iloc[0]), 1, int(d["epoch"].max()) + 1)
        ax.set_title(f"clean RLP accuracy at {tap}", fontsize=9)
        ax.set_xlabel("epoch")
    axs[0, 0].set_ylabel("clean RLP accuracy (mean over seeds)")
    axs[0, 0].legend(fontsize=7)
    fig.tight_layout()
    files.append(_save(fig, out_dir / "rlp_vs_epoch.png"))
    if len(taps) > 1:
        frames = {label: g for label, g in runs[runs["set"] == 0].groupby("setting", sort=False)}
        files.append(_depth(frames, taps, out_dir / "rlp_depth.png", out_dir.name))
    return files


def plot(path: str | Path) -> list[Path]:
    """Re-render the figures of a run folder or a sweep folder."""
    path = Path(path)
    if (path / "sweep_summary.csv").exists():
        return plot_sweep(path)
    if (path / "memorization_epochs.csv").exists():
        return plot_run(path)
    raise DicelabError(f"{path}: neither a memorization run folder (memorization_epochs.csv) nor a sweep folder "
                       "(sweep_summary.csv)")


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
