"""``analyze()``: every table of spec 02 §6 for one stored study, written to ``runs/<study>/analysis/``.

Correlations, importance and the summary read the trials table only; best-vs-default and the ablation
re-train (runner studies only: imported logs have no task to re-run).
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from dicelab import __version__
from dicelab.errors import ConfigError
from dicelab.study.analysis import Analysis, correlations, importance, search_rows, summarize, trials_table
from dicelab.study.space import SearchSpace
from dicelab.study.storage import open_storage

__all__ = ["analyze", "print_analysis", "default_analysis_dir", "best_table"]


def default_analysis_dir(study_name: str, runs_dir: str | Path = "runs") -> Path:
    return Path(runs_dir) / study_name.replace("/", "_") / "analysis"


def best_table(space: SearchSpace, table: pd.DataFrame) -> pd.DataFrame | None:
    """The best trial's configuration: technique, level, value (decoded), off value."""
    done = table[(table["state"] == "COMPLETE") & table["value"].map(lambda v: v is not None and math.isfinite(v))]
    if done.empty:
        return None
    row = done.loc[done["value"].idxmax()]
    u = [float(row[f"coord:{d.name}"]) for d in space.dims]
    rows = []
    for d, x in zip(space.dims, u, strict=True):
        value: Any = d.value(x) if space.preset != "paper" else x
        rows.append({"technique": d.technique, "level": d.level, "coordinate": d.name, "value": value,
                     "off": d.off, "on": None if d.off is None else value != d.off, "trial": int(row["number"])})
    return pd.DataFrame(rows)


def _header(study: optuna.Study, table: pd.DataFrame) -> dict[str, Any]:
    attrs = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    by_state: dict[str, int] = {}
    for t in trials:
        by_state[t.state.name] = by_state.get(t.state.name, 0) + 1
    return {"study": study.study_name, "task": attrs.get("dicelab:task"), "sampler": attrs.get("dicelab:sampler"),
            "budget": attrs.get("dicelab:n_trials"), "trials": len(trials), "trials_by_state": by_state,
            "wall_time_s": wall, "seed": attrs.get("dicelab:seed"), "source": attrs.get("dicelab:source"),
            "dicelab_version": __version__, "analysed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "config": attrs.get("dicelab:config")}


def analyze(storage: str | optuna.storages.BaseStorage, study_name: str, *, out_dir: str | Path | None = None,
            rerun: bool = True, seeds: int = 5, workers: int = 1, final_epochs: int | None = None,
            full_train: bool = False, epochs: int | None = None, bootstrap: int = 0, min_n: int = 30) -> Analysis:
    """Analyse a stored study and write the tables; ``rerun=False`` skips the two training tables."""
    from dicelab.study.reruns import ablation, best_vs_default
    from dicelab.study.runner import OBJECTIVE_ATTR, load_study

    store = open_storage(storage) if isinstance(storage, str) else storage
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        raise ConfigError(f"no study {study_name!r} in this storage") from None
    attrs = study.user_attrs
    n_classes = int(attrs.get("dicelab:n_classes", 10))
    table = trials_table(study)
    rows = search_rows(table, epochs if epochs is not None else "auto")
    summary = summarize(rows, by="optimizer", n_classes=n_classes, epochs=None)
    corr = correlations(rows, by="optimizer", min_n=min_n, n_classes=n_classes, epochs=None)
    space = SearchSpace.from_json(attrs["dicelab:space"]) if attrs.get("dicelab:space") else None
    imp = importance(rows, by="optimizer", bootstrap=bootstrap, space=space, epochs=None, min_n=min_n)
    best = best_table(space, rows) if space is not None else None
    bvd = abl = None
    runnable = attrs.get("dicelab:source") == "run" and not attrs.get(OBJECTIVE_ATTR)
    if rerun and runnable and best is not None:
        _, cfg, space = load_study(store, study_name, with_sampler=False)
        bvd = best_vs_default(study, cfg, space, seeds=seeds, final_epochs=final_epochs, full_train=full_train,
                              workers=workers)
        abl = ablation(study, cfg, space, seeds=seeds, workers=workers, final_epochs=final_epochs,
                       full_train=full_train)
        if best is not None:
            deltas = abl[abl.kind == "technique"].set_index("factor")["delta_test"]
            best["ablation_delta_test"] = best["technique"].map(deltas)
    if out_dir is None:
        runs_dir = Path("runs")
        if attrs.get("dicelab:config"):
            runs_dir = Path(json.loads(attrs["dicelab:config"])["study"]["runs_dir"])
        out_dir = default_analysis_dir(study_name, runs_dir)
    result = Analysis(study_name=study_name, header=_header(study, table), table=table, summary=summary,
                      correlations=corr, importance=imp, best=best, best_vs_default=bvd, ablation=abl,
                      n_classes=n_classes, min_n=min_n)
    result.save(out_dir)
    return result


def _frame_table(title: str, frame: pd.DataFrame | None, columns: list[str] | None = None, digits: int = 4):
    from rich.table import Table

    t = Table(title=title)
    if frame is None or frame.empty:
        t.add_column("(none)")
        return t
    frame = frame[[c for c in (columns or frame.columns) if c in frame.columns]]
    for c in frame.columns:
        t.add_column(str(c))
    for _, r in frame.iterrows():
        t.add_row(*[f"{v:.{digits}g}" if isinstance(v, float) else str(v) for v in r])
    return t


def print_analysis(result: Analysis, console) -> None:
    """The analysis as rich tables: summary, strongest correlations, importance, best vs default, ablation."""
    console.print(_frame_table(f"{result.study_name}: summary", result.summary))
    corr = result.correlations
    if corr is not None and not corr.empty:
        overall = corr[corr.group == "all"].dropna(subset=["rho"])
        overall = overall.reindex(overall.rho.abs().sort_values(ascending=False).index).head(10)
        console.print(_frame_table("strongest correlations (all trials)", overall))
    imp = result.importance
    if imp is not None and not imp.empty:
        top = imp[imp.group == "all"].sort_values("importance", ascending=False).head(10)
        console.print(_frame_table("importance (PED-ANOVA, all trials)", top))
    if result.best_vs_default is not None:
        console.print(_frame_table("best vs default (re-runs on fresh seeds)", result.best_vs_default))
    if result.ablation is not None:
        console.print(_frame_table("ablation of the best configuration", result.ablation))

