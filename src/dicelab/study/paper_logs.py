"""The reference study's 31k logged runs (spec 02 §8, ``shared/data/README.md``).

``rolling_dice_configs.csv.gz`` holds one row per training run of the "Rolling the dice" study: the 22 raw
PSO coordinates, the epochs of the run, validation and test accuracy. This module reads it into the
:func:`dicelab.study.analysis.trials_table` schema (:func:`read_paper_logs`), builds the long-run table of
§8 (:func:`paper_final_runs`), and imports the rows into Optuna studies, one per (arch, dataset)
(:func:`import_paper_logs`), so that every analysis of a dicelab study also runs on the reference logs.

Coordinates are the raw logged values clipped to :data:`PAPER_WIDENED_BOUNDS` (the final notebooks' bounds,
widened to what the earlier runs used). Exactly one cell is out of those bounds — a ``shuffle`` of 6 in a
final run of ``VGG_Fashion_MNIST_20230422.xlsx``, "on" either way — and it is clipped to 1 in both the
DataFrame and the imported study, so the two paths give identical tables.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from dicelab.errors import ConfigError, DatasetError
from dicelab.study.space import PAPER_COLUMNS, PAPER_WIDENED_BOUNDS, SearchSpace, paper_strengths

__all__ = [
    "find_reference_data",
    "DEMO_FILE",
    "OPTIMIZER_NAMES",
    "PAPER_SOURCE",
    "import_paper_logs",
    "optimizer_names",
    "paper_final_runs",
    "paper_space",
    "paper_study_name",
    "read_paper_logs",
]

log = logging.getLogger(__name__)

# The authors' later public demo run (10-particle PSO, 9 rows): not part of the paper's data.
DEMO_FILE = "VGG_CIFAR10_20240324.xlsx"
# max(1, ceil(raw)) clipped to 3 → the reference optimizers (data README, column 14).
OPTIMIZER_NAMES = {1: "sgd", 2: "momentum", 3: "adam"}
PAPER_SOURCE = "paper-logs"
N_CLASSES = 10          # MNIST, Fashion-MNIST and CIFAR10 all have 10 classes
SEARCH_EPOCHS = 20      # the search fidelity: analyses of imported logs use these rows by default

_META_COLUMNS = ("source_file", "arch", "dataset", "row_index", "epochs")
_ACCURACY_COLUMNS = ("val_accuracy", "test_accuracy")
_REQUIRED = (*_META_COLUMNS, *PAPER_COLUMNS, *_ACCURACY_COLUMNS)
# Off values of the default configuration ("baseline"); batch size 128 or 32 and optimizer raw 0 or 1 (SGD).
_DEFAULT_OFF = {"shuffle": 0.0, "flip": 1.0, "weight_init_std": 0.05, "lr_exponent": 3.0,
                "weight_noise_exponent": 6.0}
_DEFAULT_BATCHES = (128.0, 32.0)


REFERENCE_CSV = "rolling_dice_configs.csv.gz"


def find_reference_data(start: str | Path | None = None) -> Path | None:
    """The folder holding the reference logs, or None: ``$DICELAB_REFERENCE_DATA``, else ``shared/data`` beside
    an ancestor of ``start`` (default: this package's checkout, then the working directory), as in the
    project's layout (``../shared/data`` next to the repository)."""
    env = os.environ.get("DICELAB_REFERENCE_DATA")
    candidates = [Path(env).expanduser()] if env else []
    for origin in [Path(start)] if start is not None else [Path(__file__).resolve(), Path.cwd().resolve()]:
        candidates += [parent / "shared" / "data" for parent in origin.parents]
    for folder in candidates:
        if (folder / REFERENCE_CSV).is_file():
            return folder
    return None


def paper_space() -> SearchSpace:
    """The search space of imported logs: the 22 raw coordinates with the widened bounds."""
    return SearchSpace.paper(bounds=PAPER_WIDENED_BOUNDS)


def paper_study_name(arch: str, dataset: str) -> str:
    """``paper-<arch>-<dataset>``, e.g. ``paper-VGG-Fashion-MNIST``."""
    return f"paper-{arch}-{dataset}"


# -- reading ---------------------------------------------------------------------------------------------
def _load_raw(path: str | Path) -> pd.DataFrame:
    """The CSV as logged, checked: every column present, numbers finite. One-line DatasetError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"reference logs {path}: file not found")
    try:
        raw = pd.read_csv(path)
    except (OSError, EOFError, ValueError, UnicodeDecodeError, gzip.BadGzipFile, zlib.error,
            pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()
        raise DatasetError(f"reference logs {path}: unreadable ({type(exc).__name__}: "
                           f"{first[0] if first else 'no detail'})") from None
    missing = [c for c in _REQUIRED if c not in raw.columns]
    if missing:
        raise DatasetError(f"reference logs {path}: column {missing[0]!r} missing "
                           f"({len(missing)} of {len(_REQUIRED)} expected columns absent)")
    numeric = [*PAPER_COLUMNS, *_ACCURACY_COLUMNS, "row_index", "epochs"]
    for col in numeric:
        if not pd.api.types.is_numeric_dtype(raw[col]):
            raise DatasetError(f"reference logs {path}: column {col!r} is not numeric")
    values = raw[numeric].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DatasetError(f"reference logs {path}: column {numeric[col]!r} row {row} is not a finite number")
    for col in ("source_file", "arch", "dataset"):
        if raw[col].isna().any():
            raise DatasetError(f"reference logs {path}: column {col!r} has empty cells")
    return raw


def _clip_bounds() -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([PAPER_WIDENED_BOUNDS[c][0] for c in PAPER_COLUMNS], dtype=np.float64)
    hi = np.array([PAPER_WIDENED_BOUNDS[c][1] for c in PAPER_COLUMNS], dtype=np.float64)
    return lo, hi


def _table_from_raw(raw: pd.DataFrame) -> pd.DataFrame:
    """Raw rows → the trials_table schema; ``attrs["clipped"]`` counts clipped cells per column."""
    x = raw[list(PAPER_COLUMNS)].to_numpy(dtype=np.float64)
    lo, hi = _clip_bounds()
    u = np.clip(x, lo, hi)
    changed = (u != x).sum(axis=0)
    clipped = {c: int(k) for c, k in zip(PAPER_COLUMNS, changed, strict=True) if k}
    coords = pd.DataFrame(u, columns=list(PAPER_COLUMNS))
    arch = raw["arch"].astype(str).to_numpy()
    dataset = raw["dataset"].astype(str).to_numpy()
    label = pd.Series(np.char.add(np.char.add(arch.astype(str), "-"), dataset.astype(str)))
    n = len(raw)
    strengths = paper_strengths(coords)
    out: dict[str, Any] = {
        # the trial number inside the imported study paper-<arch>-<dataset>: rows are added in file order
        "number": label.groupby(label, sort=False).cumcount().to_numpy(dtype=np.int64),
        "state": pd.Series(["COMPLETE"] * n, dtype="str"),
        "status": pd.Series(["imported"] * n, dtype="str"),
        "reason": pd.Series([None] * n, dtype="str"),
        "value": raw["val_accuracy"].to_numpy(dtype=np.float64),
        "test_accuracy": raw["test_accuracy"].to_numpy(dtype=np.float64),
        "duration_s": np.full(n, np.nan),
        "worker": pd.Series([None] * n, dtype="str"),
        "pso_p": pd.array([pd.NA] * n, dtype="Int64"),
        "pso_t": pd.array([pd.NA] * n, dtype="Int64"),
        "epochs": pd.array(raw["epochs"].to_numpy(dtype=np.int64), dtype="Int64"),
        "optimizer": pd.Series(optimizer_names(u[:, PAPER_COLUMNS.index("optimizer")]), dtype="str"),
    }
    for j, col in enumerate(PAPER_COLUMNS):
        out[f"coord:{col}"] = u[:, j]
    for name in strengths.columns:
        out[f"strength:{name}"] = strengths[name].to_numpy(dtype=np.float64)
    out["arch"] = pd.Series(arch, dtype="str")
    out["dataset"] = pd.Series(dataset, dtype="str")
    out["arch_dataset"] = pd.Series(label.to_numpy(), dtype="str")
    out["source_file"] = pd.Series(raw["source_file"].astype(str).to_numpy(), dtype="str")
    out["row_index"] = raw["row_index"].to_numpy(dtype=np.int64)
    table = pd.DataFrame(out)
    table.attrs["dicelab:space"] = paper_space().to_json()
    table.attrs["clipped"] = clipped
    return table


def optimizer_names(raw: np.ndarray | Sequence[float]) -> np.ndarray:
    """Reference optimizer coordinate → ``sgd`` / ``momentum`` / ``adam`` (``max(1, ceil(x))``, at most 3)."""
    codes = np.clip(np.ceil(np.asarray(raw, dtype=np.float64)), 1, 3).astype(np.int64)
    return np.array([OPTIMIZER_NAMES[1], OPTIMIZER_NAMES[2], OPTIMIZER_NAMES[3]], dtype=object)[codes - 1]


def read_paper_logs(path: str | Path, *, include_demo: bool = False) -> pd.DataFrame:
    """The reference logs as a trials table (the schema of :func:`dicelab.study.analysis.trials_table`).

    One row per logged run, in file order: ``number`` (the trial number in the imported study
    ``paper-<arch>-<dataset>``), ``state`` COMPLETE, ``status`` imported, ``value`` = validation accuracy,
    ``test_accuracy``, ``epochs``, ``optimizer`` (sgd/momentum/adam), ``coord:<column>`` for the 22 raw
    coordinates (clipped to the widened bounds), ``strength:<technique>`` (the data README's convention),
    ``arch``, ``dataset``, ``arch_dataset`` (e.g. ``VGG-Fashion-MNIST``), ``source_file``, ``row_index``.
    The 2024 demo file is left out unless ``include_demo``. ``attrs["clipped"]`` counts clipped cells.
    A missing or corrupt file raises :class:`DatasetError` naming it.
    """
    raw = _load_raw(path)
    if not include_demo:
        raw = raw[raw["source_file"] != DEMO_FILE].reset_index(drop=True)
    return _table_from_raw(raw)


# -- long runs -------------------------------------------------------------------------------------------
def paper_final_runs(table: pd.DataFrame, *, min_repeats: int = 5, epochs: Sequence[int] = (50, 100)) -> pd.DataFrame:
    """The long-run table of spec 02 §8, from a paper trials table.

    Rows at ``epochs`` (50: MNIST, 100: Fashion-MNIST and CIFAR10) are grouped by identical coordinates
    within each (arch_dataset, epochs). For each such cell: every **default** group (all coordinates at their
    off value, plain SGD, batch 128 or 32) and the **best** group = the best mean test accuracy among groups
    with at least ``min_repeats`` runs (chosen on test, hence optimistic). Columns: ``arch_dataset``,
    ``epochs``, ``arm`` (default | best), ``batch_size``, ``optimizer``, ``n``, ``test_mean``, ``test_std``,
    ``val_mean``, ``n_groups`` (groups with at least ``min_repeats`` runs in the cell), ``source_files``.
    """
    coord_cols = [f"coord:{c}" for c in PAPER_COLUMNS]
    missing = [c for c in (*coord_cols, "arch_dataset", "epochs", "value", "test_accuracy") if c not in table.columns]
    if missing:
        raise ConfigError(f"paper_final_runs: the table lacks column {missing[0]!r} (not a paper trials table)")
    rows = table[table["epochs"].isin(list(epochs))]
    if "state" in rows.columns:
        rows = rows[rows["state"] == "COMPLETE"]
    out: list[dict[str, Any]] = []
    keys = ["arch_dataset", "epochs", *coord_cols]
    files = rows.get("source_file", pd.Series("", index=rows.index)).astype(str)
    grouped = rows.assign(_file=files).groupby(keys, sort=False, dropna=False)
    groups = grouped.agg(n=("test_accuracy", "size"), test_mean=("test_accuracy", "mean"),
                         test_std=("test_accuracy", "std"), val_mean=("value", "mean"),
                         source_files=("_file", lambda s: ",".join(sorted(set(s))))).reset_index()
    is_default = np.ones(len(groups), dtype=bool)
    for col in PAPER_COLUMNS:
        if col in ("batch_size", "optimizer"):
            continue
        is_default &= groups[f"coord:{col}"].to_numpy() == _DEFAULT_OFF.get(col, 0.0)
    is_default &= groups["coord:batch_size"].isin(_DEFAULT_BATCHES).to_numpy()
    is_default &= optimizer_names(groups["coord:optimizer"].to_numpy()) == "sgd"
    groups["is_default"] = is_default

    def _row(g: pd.Series, arm: str, n_groups: int) -> dict[str, Any]:
        return {"arch_dataset": g["arch_dataset"], "epochs": int(g["epochs"]), "arm": arm,
                "batch_size": float(g["coord:batch_size"]),
                "optimizer": str(optimizer_names([g["coord:optimizer"]])[0]),
                "n": int(g["n"]), "test_mean": float(g["test_mean"]), "test_std": float(g["test_std"]),
                "val_mean": float(g["val_mean"]), "n_groups": n_groups, "source_files": g["source_files"]}

    for _, cell in groups.groupby(["arch_dataset", "epochs"], sort=False):
        big = cell[cell["n"] >= min_repeats]
        defaults = cell[cell["is_default"]]
        # batch 128 (the study's baseline) first, then 32
        defaults = defaults.iloc[np.argsort(-defaults["coord:batch_size"].to_numpy(), kind="stable")]
        for _, g in defaults.iterrows():
            out.append(_row(g, "default", len(big)))
        if len(big):
            best = big.iloc[int(np.argmax(big["test_mean"].to_numpy()))]
            out.append(_row(best, "best", len(big)))
    columns = ["arch_dataset", "epochs", "arm", "batch_size", "optimizer", "n", "test_mean", "test_std",
               "val_mean", "n_groups", "source_files"]
    return pd.DataFrame(out, columns=columns)


# -- import into Optuna ----------------------------------------------------------------------------------
def _resolve_storage(storage: Any) -> optuna.storages.BaseStorage:
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if isinstance(storage, str | Path):
        from dicelab.study.storage import open_storage

        return open_storage(str(storage))
    raise ConfigError(f"storage: expected a storage URL or an Optuna storage, got {type(storage).__name__}")


def _study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def import_paper_logs(path: str | Path, storage: Any, *, arch: str | None = None, dataset: str | None = None,
                      include_demo: bool = False) -> list[str]:
    """Import the reference logs: one Optuna study per (arch, dataset), named ``paper-<arch>-<dataset>``.

    Every row becomes a COMPLETE trial (``study.add_trials``) with the 22 clipped coordinates as parameters
    (``SearchSpace.paper`` with the widened bounds), value = validation accuracy and user attrs
    ``test_accuracy``, ``epochs``, ``source_file``, ``row_index``, ``status`` = imported (plus ``clipped``,
    the raw value of any clipped cell). Study user attrs: ``dicelab:space``, ``dicelab:source`` =
    paper-logs, ``dicelab:n_classes`` = 10, ``dicelab:task``, ``dicelab:sampler``, ``dicelab:paper_arch``,
    ``dicelab:paper_dataset``, ``dicelab:rows`` and ``dicelab:clipped`` (clipped cells per column).
    ``storage`` is a URL (``journal:PATH``, ``sqlite:///PATH``, ...) or an Optuna storage. ``arch`` /
    ``dataset`` restrict the import. An existing study of the same name raises :class:`ConfigError`
    before anything is written. Returns the study names, in file order.
    """
    raw = _load_raw(path)
    if not include_demo:
        raw = raw[raw["source_file"] != DEMO_FILE].reset_index(drop=True)
    for key, want in (("arch", arch), ("dataset", dataset)):
        if want is not None:
            known = sorted(raw[key].astype(str).unique())
            if want not in known:
                raise ConfigError(f"{key}: {want!r} is not in the reference logs (known: {', '.join(known)})")
            raw = raw[raw[key] == want].reset_index(drop=True)
    table = _table_from_raw(raw)
    resolved = _resolve_storage(storage)
    space = paper_space()
    pairs = list(dict.fromkeys(zip(table["arch"], table["dataset"], strict=True)))
    names = [paper_study_name(a, d) for a, d in pairs]
    for name in names:
        if _study_exists(resolved, name):
            raise ConfigError(f"study {name!r} already exists in this storage; delete it or use another storage")
    distributions = space.distributions()
    coord_cols = [f"coord:{c}" for c in PAPER_COLUMNS]
    x_raw = raw[list(PAPER_COLUMNS)].to_numpy(dtype=np.float64)
    for (a, d), name in zip(pairs, names, strict=True):
        mask = ((table["arch"] == a) & (table["dataset"] == d)).to_numpy()
        part = table[mask]
        u = part[coord_cols].to_numpy(dtype=np.float64)
        raw_part = x_raw[mask]
        clipped_cells = {c: int(k) for c, k in zip(PAPER_COLUMNS, (u != raw_part).sum(axis=0), strict=True) if k}
        study = optuna.create_study(study_name=name, storage=resolved, direction="maximize")
        study.set_user_attr("dicelab:space", space.to_json())
        study.set_user_attr("dicelab:source", PAPER_SOURCE)
        study.set_user_attr("dicelab:n_classes", N_CLASSES)
        study.set_user_attr("dicelab:task", f"{d} / {a} (reference logs, {SEARCH_EPOCHS}-epoch search)")
        study.set_user_attr("dicelab:sampler", "pso (reference logs)")
        study.set_user_attr("dicelab:paper_arch", a)
        study.set_user_attr("dicelab:paper_dataset", d)
        study.set_user_attr("dicelab:rows", int(mask.sum()))
        study.set_user_attr("dicelab:clipped", clipped_cells)
        trials = []
        values = part["value"].to_numpy(dtype=np.float64)
        tests = part["test_accuracy"].to_numpy(dtype=np.float64)
        epochs = part["epochs"].to_numpy(dtype=np.int64)
        files = part["source_file"].to_numpy()
        row_index = part["row_index"].to_numpy(dtype=np.int64)
        for i in range(len(part)):
            attrs: dict[str, Any] = {"status": "imported", "test_accuracy": float(tests[i]),
                                     "epochs": int(epochs[i]), "source_file": str(files[i]),
                                     "row_index": int(row_index[i])}
            diff = u[i] != raw_part[i]
            if diff.any():
                attrs["clipped"] = {PAPER_COLUMNS[j]: float(raw_part[i, j]) for j in np.flatnonzero(diff)}
            trials.append(optuna.trial.create_trial(
                params=dict(zip(PAPER_COLUMNS, map(float, u[i]), strict=True)),
                distributions=distributions, value=float(values[i]), user_attrs=attrs))
        study.add_trials(trials)
        if clipped_cells:
            log.info("%s: clipped %s", name, ", ".join(f"{k} ({v})" for k, v in clipped_cells.items()))
    return names

