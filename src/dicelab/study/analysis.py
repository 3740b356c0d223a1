"""Analysis of a study (spec 02 §6): the trials table, summary, correlations and importances.

Everything here works on a **trials table** (:func:`trials_table`): one row per trial with its state,
status, value (validation accuracy), test accuracy, optimizer, the stored coordinates (``coord:<param>``)
and the technique strengths (``strength:<technique>``). The same functions therefore run on a dicelab study
and on the imported reference logs (:func:`dicelab.study.paper_logs.read_paper_logs` gives that table
directly, without storage).

Imported reference studies mix fidelities (1-epoch screens, 20-epoch search, 50/100-epoch final runs);
``epochs="auto"`` keeps their 20-epoch search rows and keeps every row of other tables.
"""

from __future__ import annotations

import datetime
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from dicelab.errors import ConfigError
from dicelab.study.space import PAPER_COLUMNS, SearchSpace, paper_strengths

__all__ = [
    "Analysis",
    "ablation",
    "analyze",
    "best_vs_default",
    "OPTIMIZER_ORDER",
    "correlations",
    "importance",
    "search_rows",
    "summarize",
    "technique_level",
    "trials_table",
]

OPTIMIZER_ORDER = ("sgd", "momentum", "adam")
PAPER_SEARCH_EPOCHS = 20
FANOVA_MAX_TRIALS = 1000
_STATES = ("COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING")
# Strength names of the paper convention that differ from the catalog technique name.
_STRENGTH_ALIASES = {"weight_init_std": "weight_init"}


# -- small helpers -----------------------------------------------------------------------------------------
def technique_level(name: str) -> str:
    """The catalog level (data / model / optimization / learning) of a technique or strength name."""
    from dicelab.randomness.registry import technique, technique_names

    base = _STRENGTH_ALIASES.get(name, name.split(":")[0])
    if base in technique_names():
        return str(technique(base).level)
    return ""


def _paper_strength_names() -> dict[str, str]:
    """Raw paper column → its strength name (lr_exponent → lr, ...); optimizer has none."""
    probe = paper_strengths(pd.DataFrame({c: [1.0] for c in PAPER_COLUMNS}))
    cols = [c for c in PAPER_COLUMNS if c != "optimizer"]
    return dict(zip(cols, probe.columns, strict=True))


def _is_paper_table(table: pd.DataFrame) -> bool:
    return "source_file" in table.columns and "status" in table.columns and bool(
        (table["status"] == "imported").any())


def search_rows(table: pd.DataFrame, epochs: int | str | None = "auto") -> pd.DataFrame:
    """The rows an analysis uses: ``epochs="auto"`` keeps the 20-epoch search rows of imported reference
    logs and every row of other tables; an int keeps rows of that fidelity; ``None`` keeps all."""
    if epochs == "auto":
        epochs = PAPER_SEARCH_EPOCHS if _is_paper_table(table) else None
    if epochs is None:
        return table
    if isinstance(epochs, str) or "epochs" not in table.columns:
        raise ConfigError(f"epochs: {epochs!r} needs an int and a table with an epochs column")
    return table[(table["epochs"] == int(epochs)).fillna(False).to_numpy(dtype=bool)]


def _groups(table: pd.DataFrame, by: str | None) -> list[tuple[str, pd.DataFrame]]:
    """("all", table) then one entry per value of column ``by`` (optimizers in sgd, momentum, adam order)."""
    out = [("all", table)]
    if by is None:
        return out
    if by not in table.columns:
        raise ConfigError(f"by: the trials table has no column {by!r}")
    values = [v for v in pd.unique(table[by].dropna()) if v is not None]
    known = [v for v in OPTIMIZER_ORDER if v in values]
    rest = sorted((v for v in values if v not in OPTIMIZER_ORDER), key=str)
    for v in known + rest:
        out.append((str(v), table[(table[by] == v).fillna(False).to_numpy(dtype=bool)]))
    return out


def _missing(value: Any) -> bool:
    """None, NaN or pd.NA."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _strength_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("strength:") and pd.api.types.is_numeric_dtype(table[c])]


# -- trials_table ------------------------------------------------------------------------------------------
def _study_space(study: optuna.Study) -> SearchSpace | None:
    text = study.user_attrs.get("dicelab:space")
    return SearchSpace.from_json(text) if text else None


def _task_optimizer(attrs: Mapping[str, Any]) -> str | None:
    """The task's optimizer from the stored study config, when the space does not search it."""
    text = attrs.get("dicelab:config")
    if not text:
        return None
    try:
        config = json.loads(text) if isinstance(text, str) else dict(text)
    except (TypeError, ValueError):
        return None
    task = config.get("task") or {}
    for table in (task.get("randomness") or {}, task, task.get("train") or {}):
        value = table.get("optimizer")
        if isinstance(value, Mapping):
            value = value.get("name")
        if isinstance(value, str):
            return value
    return None


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial of a stored study (spec 02 §6; columns in ``study_plan``'s schema).

    ``number``, ``state``, ``status``, ``reason``, ``value``, ``value_seed_<i>``, ``test_accuracy``,
    ``duration_s``, ``worker``, ``pso_p``, ``pso_t``, ``epochs``, ``optimizer``, ``coord:<param>`` for every
    dimension of the stored space (``dicelab:space``; categorical → choice index; missing → NaN) and
    ``strength:<technique>``. Imported reference studies add ``arch``, ``dataset``, ``arch_dataset``,
    ``source_file`` and ``row_index`` and equal :func:`~dicelab.study.paper_logs.read_paper_logs` on their rows.
    """
    attrs = study.user_attrs
    space = _study_space(study)
    trials = study.get_trials(deepcopy=False)
    n = len(trials)
    paper = attrs.get("dicelab:source") == "paper-logs"

    def user(key: str) -> list[Any]:
        return [t.user_attrs.get(key) for t in trials]

    def floats(values: Iterable[Any]) -> np.ndarray:
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)

    def ints(values: Iterable[Any]) -> pd.arrays.IntegerArray:
        return pd.array([pd.NA if v is None else int(v) for v in values], dtype="Int64")

    def strs(values: Iterable[Any]) -> pd.Series:
        return pd.Series([None if _missing(v) else str(v) for v in values], dtype="str")

    out: dict[str, Any] = {
        "number": np.array([t.number for t in trials], dtype=np.int64),
        "state": pd.Series([t.state.name for t in trials], dtype="str"),
        "status": strs(user("status")),
        "reason": strs(user("reason")),
        "value": np.array([t.value if t.value is not None else math.nan for t in trials], dtype=np.float64),
    }
    seeds = [t.user_attrs.get("value_seeds") or [] for t in trials]
    for i in range(max((len(s) for s in seeds), default=0)):
        out[f"value_seed_{i}"] = floats(s[i] if i < len(s) else None for s in seeds)
    durations = []
    for t in trials:
        d = t.user_attrs.get("duration_s")
        if d is None and not paper and t.datetime_start is not None and t.datetime_complete is not None:
            d = (t.datetime_complete - t.datetime_start).total_seconds()
        durations.append(d)
    out.update({
        "test_accuracy": floats(user("test_accuracy")),
        "duration_s": floats(durations),
        "worker": strs(user("worker")),
        "pso_p": ints(t.system_attrs.get("pso:p") for t in trials),
        "pso_t": ints(t.system_attrs.get("pso:t") for t in trials),
        "epochs": ints(user("epochs")),
    })

    # coordinates: the space's dims, or (no stored space) every numeric parameter seen
    if space is not None:
        dims = list(space.dims)
        names = [d.name for d in dims]
    else:
        dims = []
        names = sorted({k for t in trials for k, dist in t.distributions.items()
                        if not isinstance(dist, CategoricalDistribution)})
    u = np.full((n, len(names)), np.nan)
    for i, t in enumerate(trials):
        params = t.params
        for j, name in enumerate(names):
            if name in params:
                v = params[name]
                u[i, j] = dims[j].coordinate(v) if dims and dims[j].kind == "categorical" else float(v)

    optimizer: list[Any] = [None] * n
    strengths: dict[str, Any] = {}
    if space is not None and space.preset == "paper":
        from dicelab.study.paper_logs import optimizer_names

        j = names.index("optimizer")
        opt = optimizer_names(np.nan_to_num(u[:, j], nan=1.0))
        optimizer = [None if math.isnan(x) else o for x, o in zip(u[:, j], opt, strict=True)]
        frame = paper_strengths(pd.DataFrame(u, columns=names))
        strengths = {c: frame[c].to_numpy(dtype=np.float64) for c in frame.columns}
    elif space is not None:
        rows = [space.strengths_of(row) if not np.isnan(row).all() else None for row in u]
        keys = list(space.strengths_of(np.array([d.off_coordinate() if d.off is not None else d.low
                                                    for d in dims])).keys())
        for key in keys:
            values = [None if r is None else r[key] for r in rows]
            if any(isinstance(v, str) for v in values):
                strengths[key] = strs(values)
            else:
                strengths[key] = floats(values)
        if "optimizer" in strengths and not pd.api.types.is_numeric_dtype(strengths["optimizer"]):
            optimizer = list(strengths["optimizer"])
        else:
            optimizer = [_task_optimizer(attrs)] * n
    out["optimizer"] = strs(optimizer)
    for j, name in enumerate(names):
        out[f"coord:{name}"] = u[:, j]
    for key, values in strengths.items():
        out[f"strength:{key}"] = values
    if paper:
        arch = str(attrs.get("dicelab:paper_arch", ""))
        dataset = str(attrs.get("dicelab:paper_dataset", ""))
        out["arch"] = pd.Series([arch] * n, dtype="str")
        out["dataset"] = pd.Series([dataset] * n, dtype="str")
        out["arch_dataset"] = pd.Series([f"{arch}-{dataset}"] * n, dtype="str")
        out["source_file"] = strs(user("source_file"))
        out["row_index"] = np.array([int(v) for v in user("row_index")], dtype=np.int64)
    table = pd.DataFrame(out)
    if space is not None:
        table.attrs["dicelab:space"] = space.to_json()
    return table


# -- summary -----------------------------------------------------------------------------------------------
def summarize(table: pd.DataFrame, *, by: str | None = "optimizer", n_classes: int = 10,
              epochs: int | str | None = "auto") -> pd.DataFrame:
    """Counts and best values per group ("all", then each value of ``by``).

    Columns: ``group``, ``n`` (trials), ``n_complete``, ``n_fail``, ``n_pruned``, ``n_diverged`` (COMPLETE
    with value < 1.5 / ``n_classes`` or not finite), ``n_cut`` (status cut), ``best_value``, ``best_test``
    (test accuracy of the best-value trial), ``median_value`` (all COMPLETE values), ``diverged_share``
    (``n_diverged / n_complete``).
    """
    rows = search_rows(table, epochs)
    threshold = 1.5 / n_classes
    out = []
    for name, g in _groups(rows, by):
        state = g["state"].to_numpy().astype(str)
        complete = g[state == "COMPLETE"]
        values = complete["value"].to_numpy(dtype=np.float64)
        diverged = ~np.isfinite(values) | (values < threshold)
        status = g["status"] if "status" in g.columns else pd.Series([], dtype="str")
        finite = np.isfinite(values)
        if finite.any():
            best = int(np.flatnonzero(finite)[np.argmax(values[finite])])
            best_value = float(values[best])
            best_test = float(complete["test_accuracy"].iloc[best]) if "test_accuracy" in complete else math.nan
        else:
            best_value = best_test = math.nan
        out.append({
            "group": name, "n": len(g), "n_complete": len(complete),
            "n_fail": int((state == "FAIL").sum()), "n_pruned": int((state == "PRUNED").sum()),
            "n_diverged": int(diverged.sum()), "n_cut": int((status == "cut").sum()),
            "best_value": best_value, "best_test": best_test,
            "median_value": float(np.median(values)) if len(values) else math.nan,
            "diverged_share": float(diverged.mean()) if len(values) else math.nan,
        })
    return pd.DataFrame(out, columns=["group", "n", "n_complete", "n_fail", "n_pruned", "n_diverged", "n_cut",
                                      "best_value", "best_test", "median_value", "diverged_share"])


# -- correlations ------------------------------------------------------------------------------------------
_METHODS = {"spearman": stats.spearmanr, "pearson": stats.pearsonr, "kendall": stats.kendalltau}


def correlations(table: pd.DataFrame, *, by: str | None = "optimizer", method: str = "spearman",
                 min_fitness: float | str | None = "auto", min_n: int = 30, n_classes: int = 10,
                 epochs: int | str | None = "auto") -> pd.DataFrame:
    """Correlation of each technique's strength with the value, overall and per group of ``by``.

    Rows: COMPLETE trials with finite value ≥ ``min_fitness`` (``"auto"`` = 1.5 / ``n_classes``: diverged
    runs would otherwise dominate; ``None`` keeps every finite value). ``method`` spearman (ties get average
    ranks), pearson or kendall (tau-b). Columns ``technique``, ``level``, ``group``, ``rho``, ``p``, ``n``;
    ``rho`` and ``p`` are NaN when ``n < min_n`` or the strength is constant. p-values are descriptive only:
    trajectory samples are not independent.
    """
    if method not in _METHODS:
        raise ConfigError(f"method: {method!r} is not one of {', '.join(_METHODS)}")
    if min_fitness == "auto":
        min_fitness = 1.5 / n_classes
    rows = search_rows(table, epochs)
    values = rows["value"].to_numpy(dtype=np.float64)
    keep = (rows["state"].to_numpy().astype(str) == "COMPLETE") & np.isfinite(values)
    if min_fitness is not None:
        keep &= values >= float(min_fitness)
    rows = rows[keep]
    columns = _strength_columns(rows)
    func = _METHODS[method]
    out = []
    for group, g in _groups(rows, by):
        y = g["value"].to_numpy(dtype=np.float64)
        for col in columns:
            x = g[col].to_numpy(dtype=np.float64)
            ok = np.isfinite(x)
            xs, ys = x[ok], y[ok]
            rho = p = math.nan
            if len(xs) >= max(min_n, 3) and np.ptp(xs) > 0 and np.ptp(ys) > 0:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = func(xs, ys)
                rho, p = float(res.statistic), float(res.pvalue)
            name = col.removeprefix("strength:")
            out.append({"technique": name, "level": technique_level(name), "group": group,
                        "rho": rho, "p": p, "n": int(len(xs))})
    return pd.DataFrame(out, columns=["technique", "level", "group", "rho", "p", "n"])


# -- importance --------------------------------------------------------------------------------------------
class _FrozenTrialsStorage(BaseStorage):
    """A read-only storage over prebuilt COMPLETE trials: importance evaluators only read ``get_trials``.

    ``study.add_trials`` deep-copies and re-validates every trial (seconds for 10k trials); the evaluators
    need none of that.
    """

    _STUDY_ID = 0
    _NAME = "dicelab-importance"

    def __init__(self, trials: list[FrozenTrial], direction: StudyDirection) -> None:
        self._trials = trials
        self._direction = direction

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("read-only storage for importance evaluation")

    create_new_study = delete_study = set_study_user_attr = set_study_system_attr = _read_only
    create_new_trial = set_trial_param = set_trial_state_values = _read_only
    set_trial_intermediate_value = set_trial_user_attr = set_trial_system_attr = _read_only

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._STUDY_ID

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._NAME

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return [self._direction]

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return {}

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return {}

    def get_all_studies(self) -> list[optuna.study.FrozenStudy]:
        return []

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._trials[trial_number]._trial_id

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._trials[trial_id]

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        if states is not None and TrialState.COMPLETE not in states:
            return []
        return list(self._trials)


def _importance_space(table: pd.DataFrame, space: SearchSpace | None,
                      coord_cols: list[str]) -> dict[str, BaseDistribution]:
    """Distributions of the coordinates: the study's space, else the observed range of each coordinate."""
    if space is None and table.attrs.get("dicelab:space"):
        space = SearchSpace.from_json(table.attrs["dicelab:space"])
    names = [c.removeprefix("coord:") for c in coord_cols]
    if space is None and set(names) == set(PAPER_COLUMNS):
        from dicelab.study.paper_logs import paper_space

        space = paper_space()
    out: dict[str, BaseDistribution] = {}
    for name in names:
        if space is not None and name in space.names:
            d = space.dim(name)
            out[name] = (CategoricalDistribution(tuple(range(len(d.choices)))) if d.kind == "categorical"
                         else FloatDistribution(d.low, d.high))
        else:
            x = table[f"coord:{name}"].to_numpy(dtype=np.float64)
            x = x[np.isfinite(x)]
            if len(x) and np.ptp(x) > 0:
                out[name] = FloatDistribution(float(x.min()), float(x.max()))
    return out


def _param_technique(name: str, space: SearchSpace | None) -> str:
    """Report importances under the names correlations use (paper: lr_exponent → lr, ...)."""
    if name in PAPER_COLUMNS and (space is None or space.preset == "paper"):
        return _paper_strength_names().get(name, name)
    if space is not None and name in space.names:
        return space.dim(name).technique
    return name.split(":")[0]


def _frozen_trials(u: np.ndarray, values: np.ndarray, dists: dict[str, BaseDistribution]) -> list[FrozenTrial]:
    names = list(dists)
    categorical = [isinstance(dists[n], CategoricalDistribution) for n in names]
    now = datetime.datetime.now()
    trials = []
    for i in range(len(values)):
        params = {n: (int(round(x)) if cat else float(x))
                  for n, x, cat in zip(names, u[i], categorical, strict=True)}
        trials.append(FrozenTrial(number=i, state=TrialState.COMPLETE, value=float(values[i]),
                                  datetime_start=now, datetime_complete=now, params=params,
                                  distributions=dists, user_attrs={}, system_attrs={},
                                  intermediate_values={}, trial_id=i))
    return trials


def _evaluate(trials: list[FrozenTrial], evaluator: optuna.importance.BaseImportanceEvaluator,
              params: list[str]) -> dict[str, float]:
    study = optuna.Study(study_name=_FrozenTrialsStorage._NAME,
                         storage=_FrozenTrialsStorage(trials, StudyDirection.MAXIMIZE),
                         sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # PED-ANOVA warns about small regimes; the caller sees n
        return optuna.importance.get_param_importances(study, evaluator=evaluator, params=params)


def _make_evaluator(name: str, target_quantile: float, seed: int) -> optuna.importance.BaseImportanceEvaluator:
    if name == "ped-anova":
        return optuna.importance.PedAnovaImportanceEvaluator(target_quantile=target_quantile)
    if name == "fanova":
        return optuna.importance.FanovaImportanceEvaluator(seed=seed)
    raise ConfigError(f"evaluator: {name!r} is not one of ped-anova, fanova")


def importance(table: pd.DataFrame, *, by: str | None = None, evaluator: str = "ped-anova",
               target_quantile: float = 0.1, bootstrap: int = 0, space: SearchSpace | None = None,
               epochs: int | str | None = "auto", min_n: int = 30, seed: int = 0) -> pd.DataFrame:
    """Hyperparameter importance of each coordinate for reaching the top ``target_quantile`` of values.

    Optuna's ``PedAnovaImportanceEvaluator`` (whole space) or ``FanovaImportanceEvaluator`` (at most 1,000
    trials) on the stored coordinates of COMPLETE trials with finite value, overall and per group of ``by``;
    importances are normalised to sum to 1 per group. Distributions come from ``space``, else from the
    table's stored space, else the observed range. ``bootstrap = B > 0`` adds 2.5/97.5 % percentile
    intervals (``low``, ``high``) over B resamples of the rows. Groups with fewer than ``min_n`` rows give
    NaN. Columns: ``technique``, ``level``, ``group``, ``importance`` [, ``low``, ``high``].
    """
    if not 0 < target_quantile < 1:
        raise ConfigError(f"target_quantile: must be in (0, 1), got {target_quantile}")
    if bootstrap < 0:
        raise ConfigError(f"bootstrap: must be ≥ 0, got {bootstrap}")
    _make_evaluator(evaluator, target_quantile, seed)     # validates the name early
    rows = search_rows(table, epochs)
    values = rows["value"].to_numpy(dtype=np.float64)
    rows = rows[(rows["state"].to_numpy().astype(str) == "COMPLETE") & np.isfinite(values)]
    coord_cols = [c for c in rows.columns if c.startswith("coord:")]
    if space is None and table.attrs.get("dicelab:space"):
        space = SearchSpace.from_json(table.attrs["dicelab:space"])
    dists = _importance_space(rows, space, coord_cols)
    names = list(dists)
    if space is None and set(c.removeprefix("coord:") for c in coord_cols) == set(PAPER_COLUMNS):
        from dicelab.study.paper_logs import paper_space

        space = paper_space()
    rng = np.random.default_rng(seed)
    out = []
    for group, g in _groups(rows, by):
        u = g[[f"coord:{n}" for n in names]].to_numpy(dtype=np.float64)
        y = g["value"].to_numpy(dtype=np.float64)
        complete_coords = np.isfinite(u).all(axis=1)
        u, y = u[complete_coords], y[complete_coords]
        if evaluator == "fanova" and len(y) > FANOVA_MAX_TRIALS:
            raise ConfigError(f"evaluator: fanova is limited to {FANOVA_MAX_TRIALS:,} trials "
                              f"(group {group!r} has {len(y):,}); use ped-anova")
        if len(y) < max(min_n, 2) or not names:
            imp = {n: math.nan for n in names}
            boots = []
        else:
            lo = np.array([d.low if isinstance(d, FloatDistribution) else 0 for d in dists.values()])
            hi = np.array([d.high if isinstance(d, FloatDistribution) else len(d.choices) - 1
                           for d in dists.values()])
            u = np.clip(u, lo, hi)
            imp = _evaluate(_frozen_trials(u, y, dists), _make_evaluator(evaluator, target_quantile, seed), names)
            boots = []
            for _ in range(bootstrap):
                idx = rng.integers(0, len(y), size=len(y))
                boots.append(_evaluate(_frozen_trials(u[idx], y[idx], dists),
                                       _make_evaluator(evaluator, target_quantile, seed), names))
        for name in sorted(names, key=lambda n: -imp[n] if not math.isnan(imp[n]) else math.inf):
            tech = _param_technique(name, space)
            row = {"technique": tech, "level": technique_level(tech), "group": group,
                   "importance": float(imp[name])}
            if bootstrap:
                draws = np.array([b[name] for b in boots]) if boots else np.array([math.nan])
                row["low"], row["high"] = (float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))) \
                    if boots else (math.nan, math.nan)
            out.append(row)
    columns = ["technique", "level", "group", "importance"] + (["low", "high"] if bootstrap else [])
    return pd.DataFrame(out, columns=columns)


# -- the analysis of one study -----------------------------------------------------------------------------
_TABLE_FILES = {"summary": "summary.csv", "correlations": "correlations.csv", "importance": "importance.csv",
                "best": "best.csv", "best_vs_default": "best_vs_default.csv", "ablation": "ablation.csv"}


@dataclass
class Analysis:
    """Everything ``dicelab study analyze`` computes for one study (spec 02 §6)."""

    study_name: str
    header: dict            # study, task, sampler, budget, trials by state, wall time (s), seed, version, config
    table: pd.DataFrame     # trials_table
    summary: pd.DataFrame   # group, n, n_complete, n_fail, n_pruned, n_diverged, n_cut, best_value, best_test, ...
    correlations: pd.DataFrame  # technique, level, group, rho, p, n
    importance: pd.DataFrame    # technique, level, group, importance[, low, high]
    best: pd.DataFrame | None   # technique, level, value, off (the best trial's decoded config)
    best_vs_default: pd.DataFrame | None  # arm, n, val_mean, val_std, test_mean, test_std, diff_test, p_wilcoxon
    ablation: pd.DataFrame | None         # factor, kind, n, val_mean, test_mean, test_std, delta_test, delta_val
    n_classes: int
    min_n: int
    out_dir: Path | None = None

    def save(self, out_dir: str | Path) -> None:
        """Write ``trials.parquet``, the CSV tables present and ``header.json`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        table = self.table.copy()
        table.attrs = {}
        table.to_parquet(out / "trials.parquet", index=False)
        for attr, filename in _TABLE_FILES.items():
            frame = getattr(self, attr)
            path = out / filename
            if frame is not None:
                frame.to_csv(path, index=False)
            elif path.exists():
                path.unlink()      # a stale table of an earlier analysis must not be read back
        meta = {"study_name": self.study_name, "n_classes": self.n_classes, "min_n": self.min_n,
                "space": self.table.attrs.get("dicelab:space")}
        (out / "header.json").write_text(json.dumps({"header": self.header, "meta": meta}, indent=2,
                                                    default=str, allow_nan=True))
        self.out_dir = out

    @classmethod
    def load(cls, out_dir: str | Path) -> Analysis:
        """Read back what :meth:`save` wrote."""
        out = Path(out_dir)
        header_path = out / "header.json"
        if not header_path.is_file():
            raise ConfigError(f"analysis folder {out}: header.json not found (run `dicelab study analyze` first)")
        data = json.loads(header_path.read_text())
        meta = data.get("meta", {})
        table = pd.read_parquet(out / "trials.parquet")
        if meta.get("space"):
            table.attrs["dicelab:space"] = meta["space"]
        frames = {}
        for attr, filename in _TABLE_FILES.items():
            path = out / filename
            frames[attr] = pd.read_csv(path) if path.is_file() else None
        empty = pd.DataFrame()
        return cls(study_name=meta.get("study_name", ""), header=data.get("header", {}), table=table,
                   summary=frames["summary"] if frames["summary"] is not None else empty,
                   correlations=frames["correlations"] if frames["correlations"] is not None else empty,
                   importance=frames["importance"] if frames["importance"] is not None else empty,
                   best=frames["best"], best_vs_default=frames["best_vs_default"], ablation=frames["ablation"],
                   n_classes=int(meta.get("n_classes", 10)), min_n=int(meta.get("min_n", 30)), out_dir=out)


# =====================================================================================================
# Lead's section: best_vs_default, ablation and analyze() go below this line (spec 02 §6).
# =====================================================================================================
# The re-run tables live in dicelab.study.reruns and analyze() in dicelab.study.analyze_study (it imports this
# module); both are reachable from here, the module spec 02 §6 names.
from dicelab.study.reruns import ablation, best_vs_default  # noqa: E402


def analyze(storage, study_name: str, **kwargs) -> Analysis:
    """See :func:`dicelab.study.analyze_study.analyze`."""
    from dicelab.study.analyze_study import analyze as _analyze

    return _analyze(storage, study_name, **kwargs)

