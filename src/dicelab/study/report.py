"""The study report (spec 02 §7): one self-contained HTML file.

jinja2 with autoescape renders ``templates/report.html.j2``; every figure is a matplotlib PNG embedded as a
base64 data URI, the CSS is inline, and the page has no script and loads no font, image or link from
anywhere (a Content-Security-Policy meta tag forbids it too), so the file can be mailed or opened offline.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import pandas as pd

import dicelab
from dicelab.study import plots

if TYPE_CHECKING:
    from dicelab.study.analysis import Analysis

__all__ = ["write_report", "render_report"]

# Header fields shown first, in this order (others follow in the header's own order); the config is shown
# collapsed under the header table. Keys are matched after _label() (so "wall_time_s" is "wall time (s)").
_HEADER_ORDER = ("study", "task", "sampler", "budget", "trials", "trials by state", "wall time (s)", "seed",
                 "source", "dicelab version", "analysed at")
_LABELS = {"wall time s": "wall time (s)", "n trials": "trials"}
_CONFIG_KEYS = ("config", "config json")


def _label(key: Any) -> str:
    text = str(key).replace("_", " ").strip()
    return _LABELS.get(text, text)


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("dicelab.study", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True)


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+(?=[eE]))([eE][-+]?\d+)?")
_COUNT_COLUMNS = ("n", "n_complete", "n_fail", "n_pruned", "n_diverged", "n_cut", "number")


def _fmt(value: Any, column: str = "") -> str:
    """One table cell as text: floats to 4 decimals (p-values to 3 significant digits, differences signed,
    counts as integers), NaN/None as "–"."""
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "−inf" if v < 0 else "inf"
        if column == "p" or column.startswith("p_"):
            return f"{v:.3g}"
        if column in _COUNT_COLUMNS and v == int(v):
            return str(int(v))
        if column.startswith(("delta", "diff")) or "Δ" in column:
            return f"{v:+.4f}"
        return f"{v:.4g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.4f}"
    if value is pd.NA or value is pd.NaT:
        return "–"
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        # A mixed-type column read back from CSV (Analysis.load) holds its floats as text.
        return _fmt(float(value), column)
    return str(value)


def _rows(frame: pd.DataFrame | None, columns: list[str] | None = None) -> dict[str, Any] | None:
    """A DataFrame as {"columns": [...], "rows": [[(cell text, numeric?), ...], ...]} for the template
    (numbers are right-aligned); None, or a frame without columns, gives None."""
    if frame is None or len(frame.columns) == 0:   # Analysis.load gives an empty frame for a missing table
        return None
    cols = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    return {"columns": cols,
            "rows": [[(_fmt(v, c), _is_number(v)) for c, v in zip(cols, rec, strict=True)]
                     for rec in frame[cols].itertuples(index=False, name=None)]}


def _is_number(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, str):
        return bool(_FLOAT_TEXT.fullmatch(value.strip()) or value.strip().lstrip("+-").isdigit())
    return isinstance(value, int | float | np.integer | np.floating)


def _header_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return " · ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.1f}" if math.isfinite(value) else _fmt(value)
    return _fmt(value)


def _config_text(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _header(analysis: Analysis) -> tuple[list[tuple[str, str]], str | None]:
    header = {_label(k): v for k, v in (analysis.header or {}).items()}
    header.setdefault("study", analysis.study_name)
    header.setdefault("dicelab version", dicelab.__version__)
    config = None
    for key in _CONFIG_KEYS:
        if key in header:
            value = header.pop(key)
            config = None if value is None else _config_text(value)
    keys = [k for k in _HEADER_ORDER if k in header] + [k for k in header if k not in _HEADER_ORDER]
    return [(k, _header_value(header[k])) for k in keys], config


def _best_trial(table: pd.DataFrame) -> dict[str, str] | None:
    """Number, value and test accuracy of the best finite trial (by validation value, as study.best_trial)."""
    if table is None or len(table) == 0 or "value" not in table:
        return None
    value = pd.to_numeric(table["value"], errors="coerce")
    finite = value[np.isfinite(value.to_numpy(dtype=float))]
    if finite.empty:
        return None
    row = table.loc[finite.idxmax()]
    return {"number": _fmt(row.get("number")), "value": _fmt(float(finite.max())),
            "test": _fmt(row.get("test_accuracy")), "optimizer": _fmt(row.get("optimizer"))}


def _best_table(best: pd.DataFrame | None, ablation: pd.DataFrame | None) -> dict[str, Any] | None:
    """The best configuration with the ablation Δ (switching that technique off alone) per technique."""
    if best is None:
        return None
    frame = best.copy()
    if ablation is not None and len(ablation):
        ab = ablation
        if "kind" in ab.columns:
            ab = ab[ab["kind"] == "technique"]
        deltas = ab.set_index("factor")
        for col, label in (("delta_test", "ablation Δ test"), ("delta_val", "ablation Δ val")):
            if col in deltas.columns:
                frame[label] = frame["technique"].map(deltas[col])
    return _rows(frame, [c for c in ("technique", "level", "value", "off", "on", "ablation Δ test",
                                     "ablation Δ val") if c in frame.columns])


def _level_ablation(ablation: pd.DataFrame | None) -> dict[str, Any] | None:
    if ablation is None or "kind" not in ablation.columns:
        return None
    levels = ablation[ablation["kind"] == "level"]
    if levels.empty:
        return None
    return _rows(levels, ["factor", "n", "val_mean", "test_mean", "test_std", "delta_test", "delta_val"])


def render_report(analysis: Analysis) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    table = analysis.table if analysis.table is not None else pd.DataFrame()
    n_classes = getattr(analysis, "n_classes", None)
    min_n = int(getattr(analysis, "min_n", 30))
    figures = {
        "fitness": plots.fitness_over_trials(table),
        "heatmap": plots.correlation_heatmap(analysis.correlations, min_n=min_n),
        "importance": plots.importance_bars(analysis.importance),
        "scatter": plots.strength_scatter(table, analysis.importance, analysis.correlations),
        "histogram": plots.fitness_histogram(table, n_classes=n_classes),
        "failures": plots.failures_by_reason(table),
    }
    header, config = _header(analysis)
    has_ci = analysis.importance is not None and {"low", "high"} <= set(analysis.importance.columns)
    context = {
        "title": f"dicelab study report — {analysis.study_name}",
        "study_name": analysis.study_name,
        "header": header,
        "config": config,
        "n_trials": len(table),
        "best_trial": _best_trial(table),
        "summary": _rows(analysis.summary),
        "best": _best_table(analysis.best, analysis.ablation),
        "level_ablation": _level_ablation(analysis.ablation),
        "best_vs_default": _rows(analysis.best_vs_default),
        "figures": figures,
        "min_n": min_n,
        "diverged_threshold": _fmt(1.5 / n_classes) if n_classes else None,
        "importance_ci": has_ci,
        "version": dicelab.__version__,
    }
    return _env().get_template("report.html.j2").render(**context)


def write_report(analysis: Analysis, path: str | Path) -> Path:
    """Write the self-contained HTML report of an :class:`~dicelab.study.analysis.Analysis` to ``path``
    (parent folders are created); returns the path.

    Header (study, task, sampler, budget, trials by state, wall time, seed, dicelab version, collapsed
    config), then 1. fitness over trials, 2. correlation heat-map, 3. importance bars, 4. best configuration
    with ablation Δ and best vs default (a sentence when re-runs were skipped), 5. strength-vs-fitness
    scatter, fitness histogram and failures by reason.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(analysis), encoding="utf-8")
    return path
