"""The study report's figures (spec 02 §7): matplotlib Agg, returned as PNG bytes.

Every figure function takes the analysis tables (the ``trials_table``, ``correlations`` and ``importance``
schemas of :mod:`dicelab.study.analysis`) and returns a :class:`Plot`. When there is nothing to draw (no
trials, no failures, every correlation cell below ``min_n``...) the plot carries no PNG and a one-line
``note`` saying why, so the report prints a sentence instead of an empty axis. Rendering is deterministic:
no random draw without a fixed seed, no timestamp in the PNG metadata.
"""

from __future__ import annotations

import base64
import io
import math
import re
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless: figures are bytes, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = ["Plot", "fitness_over_trials", "correlation_heatmap", "importance_bars", "strength_scatter",
           "fitness_histogram", "failures_by_reason", "LEVEL_ORDER", "OPTIMIZER_ORDER"]

LEVEL_ORDER = ("data", "model", "optimization", "learning")
OPTIMIZER_ORDER = ("sgd", "momentum", "adam")
# One colour per optimizer in every figure; "all" (the overall group) is drawn in grey.
_GROUP_COLORS = {"all": "#555555", "sgd": "#1f77b4", "momentum": "#ff7f0e", "adam": "#2ca02c"}
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
# Trials drawn in the band under the fitness axis instead of at their value, with their marker.
_BAND_KINDS = {"diverged": ("x", "#d62728"), "cut": ("v", "#9467bd"), "failed": ("X", "#444444"),
               "pruned": ("|", "#8c564b")}
FAILURE_STATUSES = ("diverged", "cut", "error", "stale")
_DPI = 100


@dataclass(frozen=True)
class Plot:
    """One figure of the report: PNG bytes, or None with ``note`` saying why there is no figure."""

    name: str
    png: bytes | None
    note: str = ""

    @property
    def data_uri(self) -> str:
        """The PNG as a ``data:image/png;base64,...`` URI (empty when there is no figure)."""
        if self.png is None:
            return ""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    # No "Software"/date metadata: the same tables give byte-identical PNGs.
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _group_order(groups) -> list[str]:
    """"all" first, then sgd, momentum, adam, then any other group in sorted order."""
    present = [str(g) for g in pd.unique(pd.Series(list(groups), dtype=object).dropna())]
    known = [g for g in ("all", *OPTIMIZER_ORDER) if g in present]
    return known + sorted(g for g in present if g not in known)


def _colors(groups: list[str]) -> dict[str, str]:
    out, extra = {}, iter(_EXTRA_COLORS * 10)
    for g in groups:
        out[g] = _GROUP_COLORS.get(g) or next(extra)
    return out


def _group_label(group: str) -> str:
    return "overall" if group == "all" else group


def _column(table: pd.DataFrame, name: str, default=None) -> pd.Series:
    if name in table.columns:
        return table[name]
    return pd.Series([default] * len(table), index=table.index, dtype=object)


def _optimizer(table: pd.DataFrame) -> pd.Series:
    return _column(table, "optimizer").astype(object).where(lambda s: s.notna(), "?").astype(str)


def _values(table: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(_column(table, "value"), errors="coerce").to_numpy(dtype=float)


def band_kind(table: pd.DataFrame) -> pd.Series:
    """Which trials go to the band under the fitness axis: "diverged", "cut", "failed", "pruned", or ""
    for a trial drawn at its value (a finite value that is neither diverged nor cut)."""
    status = _column(table, "status").astype(object).fillna("").astype(str)
    state = _column(table, "state").astype(object).fillna("").astype(str)
    value = _values(table)
    kind = pd.Series("", index=table.index, dtype=object)
    kind[state.isin(["FAIL"]).to_numpy() | status.isin(["error", "stale"]).to_numpy()] = "failed"
    kind[state.eq("PRUNED").to_numpy() | status.eq("pruned").to_numpy()] = "pruned"
    kind[status.eq("cut").to_numpy()] = "cut"
    kind[status.eq("diverged").to_numpy() | np.isneginf(value) | np.isposinf(value)] = "diverged"
    # Unfinished trials (RUNNING/WAITING) or other trials without a value are not drawn at all.
    unplaced = kind.eq("") & ~np.isfinite(value)
    kind[unplaced.to_numpy()] = None
    return kind


def fitness_over_trials(table: pd.DataFrame) -> Plot:
    """Value per trial number coloured by optimizer, diverged/cut/failed/pruned trials as markers in a grey
    band under the axis, and the running best value as a step line."""
    name = "fitness_over_trials"
    if table is None or len(table) == 0:
        return Plot(name, None, "No trials to plot.")
    number = pd.to_numeric(_column(table, "number"), errors="coerce").to_numpy(dtype=float)
    value, kind, opt = _values(table), band_kind(table), _optimizer(table)
    drawn = kind.eq("").to_numpy()
    banded = kind.isin(list(_BAND_KINDS)).to_numpy()
    if not drawn.any() and not banded.any():
        return Plot(name, None, "No finished trial to plot yet.")
    fig, (ax, band) = plt.subplots(2, 1, figsize=(9, 4.4), sharex=True,
                                   gridspec_kw={"height_ratios": [1.0, 0.12], "hspace": 0.06})
    groups = _group_order(opt[drawn])
    colors = _colors(groups)
    size = 18 if len(table) <= 500 else 6
    for g in groups:
        m = drawn & opt.eq(g).to_numpy()
        if m.any():
            ax.scatter(number[m], value[m], s=size, color=colors[g], label=g, alpha=0.85, lw=0, zorder=3)
    if drawn.any():
        order = np.argsort(number[drawn], kind="stable")
        xs, best = number[drawn][order], np.maximum.accumulate(value[drawn][order])
        xmax = float(np.nanmax(number))
        ax.step(np.append(xs, xmax), np.append(best, best[-1]), where="post", color="black", lw=1.2,
                label=f"running best ({best[-1]:.4f})", zorder=4)
    else:
        ax.text(0.5, 0.5, "no trial with a finite fitness", transform=ax.transAxes, ha="center",
                color="#777777")
    # The band: trials without a usable value, one marker per kind, on their own strip under the axis so
    # that no marker reads as a fitness value.
    band.set_facecolor("#eeeeee")
    for k, (marker, color) in _BAND_KINDS.items():
        m = kind.eq(k).to_numpy()
        if m.any():
            band.scatter(number[m], np.zeros(m.sum()), marker=marker, s=28, color=color, lw=1.2,
                         label=f"{k} ({int(m.sum())})", zorder=3)
            ax.scatter([], [], marker=marker, s=28, color=color, lw=1.2, label=f"{k} ({int(m.sum())})")
    band.set_ylim(-1.0, 1.0)
    band.set_yticks([0.0], ["not at a\nvalue"], fontsize=7)
    band.set_xlabel("trial number")
    ax.set_ylabel("fitness (validation accuracy)")
    ax.set_title("Fitness over trials")
    ax.grid(True, alpha=0.3)
    band.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.4), frameon=False)
    fig.subplots_adjust(left=0.09, right=0.8, top=0.92, bottom=0.12)
    return Plot(name, _png(fig))


def correlation_grid(correlations: pd.DataFrame, *, min_n: int = 30):
    """The heat-map's cells: (techniques, levels, groups, rho, n) with techniques grouped by level (data,
    model, optimization, learning, then others, each in first-seen order), groups as :func:`_group_order`;
    ``rho`` is NaN where the cell is missing or has n < ``min_n`` (greyed in the figure)."""
    c = correlations.copy()
    c["level"] = c["level"].astype(object).fillna("").astype(str) if "level" in c else ""
    c["n"] = pd.to_numeric(_column(c, "n", np.nan), errors="coerce")
    levels = [lv for lv in LEVEL_ORDER if lv in set(c["level"])]
    levels += [lv for lv in pd.unique(c["level"]) if lv not in levels]
    techniques: list[str] = []
    tech_levels: list[str] = []
    for lv in levels:
        for t in pd.unique(c.loc[c["level"] == lv, "technique"]):
            if t not in techniques:
                techniques.append(str(t))
                tech_levels.append(lv)
    groups = _group_order(c["group"])
    rho = np.full((len(techniques), len(groups)), np.nan)
    n = np.zeros((len(techniques), len(groups)))
    row, col = {t: i for i, t in enumerate(techniques)}, {g: j for j, g in enumerate(groups)}
    for t, g, r, k in zip(c["technique"], c["group"], pd.to_numeric(c["rho"], errors="coerce"), c["n"],
                          strict=True):
        i, j = row[str(t)], col[str(g)]
        n[i, j] = 0 if pd.isna(k) else k
        rho[i, j] = r if (not pd.isna(k) and k >= min_n) else np.nan
    return techniques, tech_levels, groups, rho, n


def correlation_heatmap(correlations: pd.DataFrame, *, min_n: int = 30) -> Plot:
    """Techniques (rows, grouped by level) × {overall, sgd, momentum, adam, ...}; RdBu map fixed at [−1, 1],
    ρ printed in each cell, cells with n < ``min_n`` greyed with their n."""
    name = "correlation_heatmap"
    if correlations is None or len(correlations) == 0:
        return Plot(name, None, "No correlations were computed.")
    techniques, tech_levels, groups, rho, n = correlation_grid(correlations, min_n=min_n)
    if not np.isfinite(rho).any():
        return Plot(name, None, f"No correlation cell has n ≥ {min_n} trials with finite fitness.")
    height = 1.4 + 0.3 * len(techniques)
    fig, ax = plt.subplots(figsize=(2.4 + 1.1 * len(groups), height))
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(np.ma.masked_invalid(rho), cmap=cmap, vmin=-1.0, vmax=1.0, aspect="auto",
                   interpolation="nearest")
    for i in range(len(techniques)):
        for j in range(len(groups)):
            r = rho[i, j]
            if np.isfinite(r):
                ax.text(j, i, f"{r:+.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(r) > 0.6 else "black")
            else:  # grey: too few trials (their n), or no ρ at all (constant strength)
                label = f"n={int(n[i, j])}" if n[i, j] < min_n else "–"
                ax.text(j, i, label, ha="center", va="center", fontsize=6, color="#777777")
    ax.set_xticks(range(len(groups)), [_group_label(g) for g in groups], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(techniques)), techniques, fontsize=8)
    # Level blocks: a line between levels and the level's name at the right of its block.
    start = 0
    for i in range(1, len(techniques) + 1):
        if i == len(techniques) or tech_levels[i] != tech_levels[start]:
            if i < len(techniques):
                ax.axhline(i - 0.5, color="black", lw=1.0)
            ax.text(len(groups) - 0.4, 0.5 * (start + i - 1), tech_levels[start], rotation=-90, ha="left",
                    va="center", fontsize=8, clip_on=False)
            start = i
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.14, shrink=min(1.0, 8.0 / max(len(techniques), 1)))
    cb.set_label("Spearman ρ (strength vs fitness)", fontsize=8)
    ax.set_title(f"Correlation of strength with fitness (grey: n < {min_n})", fontsize=9, pad=22)
    fig.tight_layout()
    return Plot(name, _png(fig))


def _importance_frame(importance: pd.DataFrame) -> pd.DataFrame:
    imp = importance.copy()
    imp["importance"] = pd.to_numeric(imp["importance"], errors="coerce")
    return imp[np.isfinite(imp["importance"])]


def importance_bars(importance: pd.DataFrame) -> Plot:
    """PED-ANOVA importance per technique, grouped bars per optimizer (overall first); percentile intervals
    as error bars when the table has ``low``/``high`` columns (bootstrap)."""
    name = "importance_bars"
    if importance is None or len(importance) == 0:
        return Plot(name, None, "No importance was computed.")
    imp = _importance_frame(importance)
    if imp.empty:
        return Plot(name, None, "No finite importance value to plot.")
    groups = _group_order(imp["group"])
    colors = _colors(groups)
    ranking = imp[imp["group"] == groups[0]].groupby("technique", sort=False)["importance"].max()
    rest = imp.groupby("technique", sort=False)["importance"].max().drop(ranking.index, errors="ignore")
    techniques = list(ranking.sort_values(ascending=False, kind="stable").index)
    techniques += list(rest.sort_values(ascending=False, kind="stable").index)
    has_ci = {"low", "high"} <= set(imp.columns)
    height = 1.4 + 0.11 * len(techniques) * max(len(groups), 2)
    fig, ax = plt.subplots(figsize=(8, min(height, 40)))
    bar = 0.8 / len(groups)
    pos = {t: i for i, t in enumerate(techniques)}
    for k, g in enumerate(groups):
        sub = imp[imp["group"] == g]
        y = np.array([pos[t] for t in sub["technique"]], dtype=float) + (k - (len(groups) - 1) / 2) * bar
        x = sub["importance"].to_numpy(dtype=float)
        xerr = None
        if has_ci:
            low = pd.to_numeric(sub["low"], errors="coerce").to_numpy(dtype=float)
            high = pd.to_numeric(sub["high"], errors="coerce").to_numpy(dtype=float)
            if np.isfinite(low).any() or np.isfinite(high).any():
                xerr = np.vstack([np.clip(np.nan_to_num(x - low), 0, None),
                                  np.clip(np.nan_to_num(high - x), 0, None)])
        ax.barh(y, x, height=bar * 0.95, color=colors[g], label=_group_label(g), xerr=xerr,
                error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "black"})
    ax.set_yticks(range(len(techniques)), techniques, fontsize=8)
    ax.invert_yaxis()  # most important on top
    ax.set_xlabel("PED-ANOVA importance" + (" (bars: bootstrap percentile interval)" if has_ci else ""))
    ax.set_title("Importance per technique")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return Plot(name, _png(fig))


def top_techniques(importance: pd.DataFrame | None, correlations: pd.DataFrame | None, table: pd.DataFrame,
                   k: int = 4) -> list[str]:
    """The ``k`` most important techniques that have a ``strength:`` column (overall importance; else the
    largest overall |ρ|)."""
    available = {c.split(":", 1)[1] for c in table.columns if c.startswith("strength:")}
    for frame, score in ((importance, "importance"), (correlations, "rho")):
        if frame is None or len(frame) == 0 or score not in frame.columns:
            continue
        f = frame[frame["technique"].isin(available)].copy()
        f["score"] = pd.to_numeric(f[score], errors="coerce").abs()
        f = f[np.isfinite(f["score"])]
        if f.empty:
            continue
        overall = f[f["group"] == "all"] if "group" in f.columns and (f["group"] == "all").any() else f
        ranked = overall.groupby("technique", sort=False)["score"].max().sort_values(ascending=False,
                                                                                     kind="stable")
        return [str(t) for t in ranked.index[:k]]
    return []


def strength_scatter(table: pd.DataFrame, importance: pd.DataFrame | None = None,
                     correlations: pd.DataFrame | None = None, *, k: int = 4) -> Plot:
    """Strength vs fitness for the ``k`` most important techniques (finite fitness only), coloured by
    optimizer; categorical strengths are spread over their categories with a fixed-seed jitter."""
    name = "strength_scatter"
    if table is None or len(table) == 0:
        return Plot(name, None, "No trials to plot.")
    chosen = top_techniques(importance, correlations, table, k)
    value, opt = _values(table), _optimizer(table)
    ok = np.isfinite(value) & band_kind(table).isin(["", "cut"]).to_numpy()
    if not chosen or not ok.any():
        return Plot(name, None, "No importance ranking or no finite fitness to plot strengths against.")
    ncols = 2 if len(chosen) > 1 else 1
    nrows = math.ceil(len(chosen) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.1 * nrows), squeeze=False)
    groups = _group_order(opt[ok])
    colors = _colors(groups)
    rng = np.random.default_rng(0)  # jitter of categorical strengths: fixed seed, deterministic figure
    for ax, tech in zip(axes.flat, chosen, strict=False):
        s = table[f"strength:{tech}"]
        numeric = pd.to_numeric(s, errors="coerce")
        if numeric.notna().sum() >= s.notna().sum():
            x = numeric.to_numpy(dtype=float)
        else:  # a categorical strength (the optimizer): categories at 0, 1, ... with jitter
            cats = sorted(str(c) for c in pd.unique(s.dropna()))
            x = s.map(lambda v, cats=cats: cats.index(str(v)) if pd.notna(v) else np.nan).to_numpy(float)
            x = x + rng.uniform(-0.15, 0.15, size=x.size)
            ax.set_xticks(range(len(cats)), cats)
        for g in groups:
            m = ok & opt.eq(g).to_numpy() & np.isfinite(x)
            if m.any():
                ax.scatter(x[m], value[m], s=12, color=colors[g], alpha=0.8, lw=0, label=g)
        ax.set_title(tech, fontsize=9)
        ax.set_xlabel("strength", fontsize=8)
        ax.set_ylabel("fitness", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_axis_off()
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Strength vs fitness, most important techniques", fontsize=10)
    fig.tight_layout()
    return Plot(name, _png(fig))


def fitness_histogram(table: pd.DataFrame, *, n_classes: int | None = None) -> Plot:
    """Histogram of the finite fitness values, stacked by optimizer; the diverged-share threshold
    1.5/n_classes as a dashed line."""
    name = "fitness_histogram"
    if table is None or len(table) == 0:
        return Plot(name, None, "No trials to plot.")
    value, opt = _values(table), _optimizer(table)
    ok = np.isfinite(value)
    if not ok.any():
        return Plot(name, None, "No trial has a finite fitness.")
    groups = _group_order(opt[ok])
    colors = _colors(groups)
    lo, hi = float(value[ok].min()), float(value[ok].max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.005, hi + 0.005
    edges = np.linspace(lo, hi, int(np.clip(np.sqrt(ok.sum()) * 2, 5, 60)) + 1)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    data = [value[ok & opt.eq(g).to_numpy()] for g in groups]
    ax.hist(data, bins=edges, stacked=True, color=[colors[g] for g in groups], label=groups)
    if n_classes:
        ax.axvline(1.5 / n_classes, color="#d62728", ls="--", lw=1,
                   label=f"1.5/n_classes = {1.5 / n_classes:.3f}")
    n_inf = int((~ok & ~np.isnan(value)).sum())
    ax.set_xlabel("fitness (validation accuracy)" + (f"; {n_inf} non-finite not shown" if n_inf else ""))
    ax.set_ylabel("trials")
    ax.set_title("Fitness histogram")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return Plot(name, _png(fig))


def failure_reason(status: str, reason) -> str:
    """A short label that groups failures with the same cause: the first line of the reason, numbers
    replaced by ``#`` (so "loss nan at epoch 3" and "... epoch 7" count together), at most 60 characters."""
    text = str(reason).strip().splitlines()[0] if reason is not None and not pd.isna(reason) else ""
    text = re.sub(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", "#", text)
    if len(text) > 60:
        text = text[:59] + "…"
    return f"{status}: {text}" if text else status


def failure_counts(table: pd.DataFrame) -> pd.Series:
    """Count of failed trials (state FAIL, or status diverged/cut/error/stale) per :func:`failure_reason`,
    largest first (ties by label)."""
    if table is None or len(table) == 0:
        return pd.Series(dtype=int)
    status = _column(table, "status").astype(object).fillna("").astype(str)
    state = _column(table, "state").astype(object).fillna("").astype(str)
    failed = status.isin(FAILURE_STATUSES) | state.eq("FAIL")
    if not failed.any():
        return pd.Series(dtype=int)
    labels = [failure_reason(s or "failed", r)
              for s, r in zip(status[failed], _column(table, "reason")[failed], strict=True)]
    counts = pd.Series(labels).value_counts()
    return counts.sort_index().sort_values(ascending=False, kind="stable")


def failures_by_reason(table: pd.DataFrame, *, top: int = 15) -> Plot:
    """Horizontal bars: failed trials per reason (the ``top`` most common, the rest summed as "other")."""
    name = "failures_by_reason"
    counts = failure_counts(table)
    if counts.empty:
        return Plot(name, None, "No failures: every finished trial has status ok.")
    if len(counts) > top:
        counts = pd.concat([counts.iloc[:top], pd.Series({"other": int(counts.iloc[top:].sum())})])
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.32 * len(counts)))
    y = np.arange(len(counts))
    ax.barh(y, counts.to_numpy(), color="#d62728", alpha=0.8)
    for yi, c in zip(y, counts.to_numpy(), strict=True):
        ax.text(c, yi, f" {int(c)}", va="center", fontsize=8)
    ax.set_yticks(y, list(counts.index), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("trials")
    ax.set_xlim(0, counts.max() * 1.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Failures by reason ({int(counts.sum())} trials)")
    fig.tight_layout()
    return Plot(name, _png(fig))
