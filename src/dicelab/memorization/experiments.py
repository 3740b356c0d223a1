"""Runs and sweeps behind ``dicelab memorization`` (spec 04 §8–§10): one public function per command.

- :func:`run` trains one config with its ``[memorization]`` table and writes the run record, a CSV of the
  RLP metrics and the plots.
- :func:`sweep` varies one axis (λ, weight decay, dropout, label smoothing or augmentation) over a grid
  and several seeds; :func:`regularizer_sweep` runs the four standard regularisers against one baseline.
  A sweep is an Optuna study (grid sampler, journal file in the sweep folder); every run also writes its
  JSON record; a diverged run is kept with status ``diverged`` and the sweep goes on.
- :func:`depth_curve`, :func:`list_taps`, :func:`probe_run` read runs back.

The headline number of a run is the clean RLP accuracy averaged over its last 5 epochs (spec 04 §13).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dicelab.config import RunConfig, validate
from dicelab.errors import ConfigError, DicelabError
from dicelab.memorization.config import DEFAULT_LAM_GRID, MemorizationConfig

__all__ = ["RunResult", "SweepResult", "run", "sweep", "regularizer_sweep", "variant", "parse_augment", "summarize_run",
           "depth_curve", "list_taps", "probe_run", "AXES", "DEFAULT_GRIDS", "DEFAULT_REGULARIZERS", "LAST_EPOCHS"]

LAST_EPOCHS = 5          # the headline metric averages the clean accuracy of the last 5 epochs
AXES = ("lam", "weight_decay", "dropout", "label_smoothing", "augment")
AUGMENTS = ("none", "input_noise", "flip", "translation")   # --augment names = catalog technique names
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")
DEFAULT_GRIDS: dict[str, tuple[Any, ...]] = {
    "lam": DEFAULT_LAM_GRID,
    "weight_decay": (0.0, 5e-4, 5e-3),
    "dropout": (0.0, 0.1, 0.2),
    "label_smoothing": (0.0, 0.1, 0.3),
    "augment": ("none", "input_noise:0.3", "input_noise:0.5"),
}
# spec 04 check 10: the asserted (stronger) setting last in each list
DEFAULT_REGULARIZERS: dict[str, tuple[Any, ...]] = {
    "weight_decay": (5e-4, 5e-3),
    "dropout": (0.1, 0.2),
    "label_smoothing": (0.1, 0.3),
    "augment": ("input_noise:0.3", "input_noise:0.5"),
}
ModelFactory = Callable[[int, Any], nn.Module]   # (seed, DataBundle) -> model; top-level for worker processes


# -- one run ---------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """A finished run: the engine's record, the RLP rows (one per epoch, tap and label set), the summary
    (one row per tap and set, the headline over the last epochs) and the files written."""

    record: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    run_dir: Path | None = None
    files: list[Path] = field(default_factory=list)


def _require_memorization(config: RunConfig) -> MemorizationConfig:
    if config.memorization is None:
        raise ConfigError("memorization: the run config has no [memorization] table (add one, e.g. "
                          "`[memorization]` with `taps = [\"penultimate\"]`)")
    return config.memorization


def rows_of(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The RLP rows of a run record, each with the epoch's task metrics beside it."""
    out = []
    for e in record.get("epochs", []):
        for r in e.get("memorization", []):
            out.append({**r, "train_acc": e.get("train_accuracy"), "val_acc": e.get("val_accuracy"),
                        "train_loss": e.get("train_loss")})
    return out


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(vals) / len(vals) if vals else None


def summarize_run(record: Mapping[str, Any], last: int = LAST_EPOCHS) -> list[dict[str, Any]]:
    """One row per (tap, set): the clean / online / held-out RLP accuracy averaged over the last ``last``
    epochs that measured it, with chance, z, R_proxy, d, head parameters and the task accuracies."""
    from dicelab.memorization.metrics import summarize

    rows = rows_of(record)
    final = record.get("final", {})
    out = []
    keys = list(dict.fromkeys((r["tap"], r["set"]) for r in rows))
    for tap, s in keys:
        mine = [r for r in rows if r["tap"] == tap and r["set"] == s]
        ref = mine[-1]
        clean = [r["clean_acc"] for r in mine if r["clean_acc"] is not None][-last:]
        acc = _mean(clean)
        m_eval = ref["m"] if ref.get("clean_m") is None else ref["clean_m"]
        stats = summarize(acc, ref["n"], m_eval)
        out.append({
            "tap": tap, "set": s, "depth": ref.get("depth"), "n": ref["n"], "m": ref["m"], "d": ref["d"],
            "head_params": ref["head_params"], "lam": ref["lam"], "epochs": len({r["epoch"] for r in mine}),
            "clean_acc": acc, "online_acc": _mean([r["online_acc"] for r in mine][-last:]),
            "heldout_acc": _mean([r["heldout_acc"] for r in mine][-last:]),
            "heldout_max_abs_z": max((abs(r["heldout_z"]) for r in mine if r.get("heldout_z") is not None), default=None),
            "first_online_acc": mine[0]["online_acc"],
            "chance": stats["chance"], "se": stats["se"], "z": stats["z"], "r_proxy": stats["r_proxy"],
            "train_acc": ref.get("train_acc"), "test_acc": final.get("test_accuracy"),
            "status": record.get("status"),
        })
    return out


def run(config: RunConfig, *, out_dir: str | Path | None = None, write: bool = True, plots: bool = True,
        quiet: bool = True, model: nn.Module | None = None, data: Any = None, hooks: Sequence[Any] = (),
        resume_from: str | Path | None = None) -> RunResult:
    """Train ``config`` (which must have a ``[memorization]`` table); write record, CSV and plots."""
    from dicelab.train import Trainer

    _require_memorization(config)
    trainer = Trainer(config, hooks, model=model, data=data, quiet=quiet)
    record = trainer.fit(out_dir=out_dir, write=write, resume_from=resume_from)
    rows = rows_of(record)
    summary = summarize_run(record)
    run_dir = getattr(trainer, "run_dir", None)
    files: list[Path] = []
    if run_dir is not None:
        files += _write_run_tables(run_dir, record, rows, summary)
        if plots:
            from dicelab.memorization.plots import plot_run

            files += plot_run(run_dir)
    return RunResult(record, rows, summary, run_dir, files)


def _write_run_tables(run_dir: Path, record: Mapping[str, Any], rows: list[dict], summary: list[dict]) -> list[Path]:
    import pandas as pd

    info = {"run": record.get("name"), "seed": record.get("seed"), "status": record.get("status")}
    epochs_csv, summary_csv = run_dir / "memorization_epochs.csv", run_dir / "memorization.csv"
    pd.DataFrame([{**info, **r} for r in rows]).to_csv(epochs_csv, index=False)
    pd.DataFrame([{**info, **r} for r in summary]).to_csv(summary_csv, index=False)
    return [summary_csv, epochs_csv]


# -- sweeps ----------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """All runs of a sweep: one summary row per (setting, seed, tap, set), the per-epoch rows, the per-
    setting aggregate (mean ± std over seeds) and the files written."""

    axis: str
    runs: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    table: list[dict[str, Any]]
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    elapsed_s: float = 0.0

    def baseline(self) -> dict[str, Any] | None:
        return next((r for r in self.table if r.get("baseline")), None)


def _value_label(axis: str, value: Any) -> str:
    return f"{axis}={value:g}" if isinstance(value, float | int) else f"{axis}={value}"


def _coerce(axis: str, value: Any) -> Any:
    if axis not in AXES:
        raise ConfigError(f"sweep axis: unknown {axis!r} (known: {', '.join(AXES)})")
    if axis == "augment":
        parse_augment(str(value))
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{axis.replace('_', '-')}: {value!r} is not a number") from None
    if not (v >= 0 and math.isfinite(v)):
        raise ConfigError(f"--{axis.replace('_', '-')}: {value!r} must be finite and >= 0")
    if axis in ("dropout",) and v >= 1:
        raise ConfigError(f"--dropout: {v} outside [0, 1)")
    if axis == "label_smoothing" and v > 1:
        raise ConfigError(f"--label-smoothing: {v} outside [0, 1]")
    return v


def parse_augment(text: str) -> tuple[str, float | str]:
    """One ``--augment`` setting as (catalog technique, value): ``"input_noise:0.5"`` → ("input_noise", 0.5),
    ``"translation:0.1"`` → ("translation", 0.1), ``"flip"`` → ("flip", "horizontal"), ``"flip:vertical"`` →
    ("flip", "vertical"), ``"none"`` → ("none", 0.0). Errors name ``--augment``."""
    name, sep, raw = text.partition(":")
    name, raw = name.strip(), raw.strip()
    if name not in AUGMENTS:
        raise ConfigError(f"--augment: unknown technique {name!r} (known: {', '.join(AUGMENTS)})")
    if name == "none":
        return name, 0.0
    if name == "flip":
        mode = raw or "horizontal"
        if mode not in FLIP_MODES:
            raise ConfigError(f"--augment: {text!r}: flip mode must be one of {', '.join(FLIP_MODES)}")
        return name, mode
    try:
        value = float(raw) if sep else 1.0
    except ValueError:
        raise ConfigError(f"--augment: {text!r} needs technique:number") from None
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"--augment: {text!r} must be finite and >= 0")
    if name == "translation" and value > 1:
        raise ConfigError(f"--augment: {text!r}: translation is a fraction of the image, at most 1")
    return name, value


def variant(config: RunConfig, axis: str, value: Any, seed: int) -> RunConfig:
    """The run config of one sweep point. ``axis="baseline"`` changes nothing but the seed.

    λ and weight decay are config fields; dropout, label smoothing and augmentation are techniques of the
    randomness catalog, set in the ``[randomness]`` table (``randomness.dropout = 0.2``; augment
    ``input_noise:σ`` → ``randomness.input_noise = σ``, ``flip`` → ``randomness.flip = "horizontal"``,
    ``translation:f`` → ``randomness.translation = f``). An off setting (0, ``none``) leaves the table as the
    base config has it, so that point is the same run as the baseline.
    """
    data = json.loads(config.model_dump_json())
    data["seed"] = int(seed)
    data.setdefault("output", {})["checkpoint"] = False
    data["train"]["progress"] = False
    if axis == "lam":
        data["memorization"]["lam"] = float(value)
    elif axis == "weight_decay":
        data["train"]["weight_decay"] = float(value)
    elif axis in ("dropout", "label_smoothing"):
        if float(value):
            data["randomness"] = {**(data.get("randomness") or {}), axis: float(value)}
    elif axis == "augment":
        name, setting = parse_augment(str(value))
        if name != "none":
            data["randomness"] = {**(data.get("randomness") or {}), name: setting}
    elif axis != "baseline":
        raise ConfigError(f"sweep axis: unknown {axis!r} (known: {', '.join(AXES)})")
    return validate(RunConfig, data, source="sweep")


def _sweep_job(payload: dict[str, Any]) -> dict[str, Any]:
    """One (setting, seed) run; top-level so that worker processes can run it."""
    warnings.filterwarnings("ignore", message="memorization: RLP heads hold")
    from dicelab.seeding import SeedBank
    from dicelab.train import Trainer
    from dicelab.train.engine import load_data_for

    cfg = validate(RunConfig, payload["config"], source="sweep")
    cfg = variant(cfg, payload["axis"], payload["value"], payload["seed"])
    seeds = SeedBank(cfg.seed)
    model = None
    t0 = time.perf_counter()
    data = load_data_for(cfg)
    if payload.get("model_factory") is not None:
        model = payload["model_factory"](cfg.seed, data)
    # the [randomness] and [memorization] hooks come from the config's own sections
    trainer = Trainer(cfg, [], data=data, model=model, seeds=seeds, quiet=True)
    run_dir = Path(payload["run_dir"])
    if (run_dir / "record.json").exists():   # a rerun of an interrupted sweep: never overwrite a record
        run_dir = run_dir.with_name(run_dir.name + f"-{int(time.time())}")
    record = trainer.fit(out_dir=run_dir)
    return {"record": record, "elapsed_s": time.perf_counter() - t0, "run_dir": str(run_dir)}


def _open_study(out_dir: Path, name: str, axis: str, values: Sequence[Any], seeds: Sequence[int]):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(out_dir / "study.journal")))
    sampler = optuna.samplers.GridSampler({"value": list(values), "seed": list(seeds)}, seed=0)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, load_if_exists=True,
                                direction="minimize")
    study.set_user_attr("axis", axis)
    return study


def _record_trial(study, value: Any, seed: int, values: Sequence[Any], seeds: Sequence[int],
                  summary: list[dict[str, Any]], status: str, run_dir: str) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution

    headline = summary[-1]["clean_acc"] if summary else None
    ok = headline is not None and math.isfinite(headline)
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
        value=headline if ok else None,
        params={"value": value, "seed": seed},
        distributions={"value": CategoricalDistribution(list(values)), "seed": CategoricalDistribution(list(seeds))},
        user_attrs={"status": status, "run_dir": run_dir, "summary": json.dumps(summary)},
    )
    study.add_trial(trial)


def _done_trials(study) -> dict[tuple[Any, int], dict[str, Any]]:
    import optuna

    done = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        done[(t.params["value"], t.params["seed"])] = t.user_attrs
    return done


def _execute(jobs: list[dict[str, Any]], workers: int, on_done: Callable[[dict, dict], None], quiet: bool) -> None:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            on_done(job, _sweep_job(job))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a fresh interpreter per worker (fork would copy the parent's torch thread pools)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_sweep_job, job): job for job in jobs}
        for fut in as_completed(futures):
            on_done(futures[fut], fut.result())


def default_workers() -> int:
    """Two worker processes where two cores exist (each run uses one thread)."""
    return max(1, min(2, os.cpu_count() or 1))


def sweep(config: RunConfig, axis: str = "lam", values: Sequence[Any] | None = None, seeds: Sequence[int] = (0, 1, 2),
          *, out_dir: str | Path | None = None, workers: int | None = None, plots: bool = True, quiet: bool = True,
          model_factory: ModelFactory | None = None, _extra: Sequence[tuple[str, Any]] = ()) -> SweepResult:
    """Train ``config`` once per (value of ``axis``, seed); return and write the table, CSVs and plots.

    ``axis`` is ``lam`` (default grid 0, 0.03, 0.1, 0.3, 1), ``weight_decay``, ``dropout``, ``label_smoothing``
    or ``augment`` (``none``, ``input_noise:σ``, ``flip[:mode]``, ``translation:f``); all but λ and weight decay
    are randomness-catalog techniques (see :func:`variant`). The sweep folder holds the
    Optuna journal (``study.journal``), one run folder per point, ``sweep.csv`` (one row per run and tap),
    ``sweep_epochs.csv`` and ``sweep_summary.csv`` (mean ± std over seeds per setting).
    Re-running into the same folder skips the points already complete.
    """
    _require_memorization(config)
    values = [_coerce(axis, v) for v in (DEFAULT_GRIDS[axis] if values is None else values)]
    if not values:
        raise ConfigError(f"--{axis.replace('_', '-')}: empty grid")
    if len(set(values)) != len(values):
        raise ConfigError(f"--{axis.replace('_', '-')}: a value is listed twice")
    seeds = [int(s) for s in seeds]
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError("--seeds: need one or more seeds >= 0")
    points = [(axis, v) for v in values] + [(a, _coerce(a, v)) for a, v in _extra]
    return _run_points(config, axis, points, seeds, out_dir=out_dir, workers=workers, plots=plots, quiet=quiet,
                       model_factory=model_factory)


def regularizer_sweep(config: RunConfig, settings: Mapping[str, Sequence[Any]] | None = None,
                      seeds: Sequence[int] = (0, 1, 2), *, out_dir: str | Path | None = None,
                      workers: int | None = None, plots: bool = True, quiet: bool = True,
                      model_factory: ModelFactory | None = None) -> SweepResult:
    """The four standard regularisers (weight decay, dropout, label smoothing, augmentation) against one
    shared baseline (the config as given, every regulariser off): each setting's clean RLP accuracy as a
    ratio of the baseline's (spec 04 check 10)."""
    _require_memorization(config)
    settings = dict(DEFAULT_REGULARIZERS if settings is None else settings)
    for axis in settings:
        if axis not in AXES or axis == "lam":
            raise ConfigError(f"regularizer: unknown {axis!r} (known: weight_decay, dropout, label_smoothing, augment)")
    points: list[tuple[str, Any]] = [("baseline", "off")]
    points += [(axis, _coerce(axis, v)) for axis, vals in settings.items() for v in vals]
    return _run_points(config, "regularizer", points, [int(s) for s in seeds], out_dir=out_dir, workers=workers,
                       plots=plots, quiet=quiet, model_factory=model_factory)


def _point_label(axis: str, value: Any) -> str:
    return "baseline" if axis == "baseline" else _value_label(axis, value)


def _run_points(config: RunConfig, kind: str, points: list[tuple[str, Any]], seeds: list[int], *,
                out_dir: str | Path | None, workers: int | None, plots: bool, quiet: bool,
                model_factory: ModelFactory | None) -> SweepResult:
    from dicelab.train.record import new_run_dir

    t0 = time.perf_counter()
    if model_factory is None:
        _check_taps(config)   # a typo fails here, before any worker starts
    out = Path(out_dir) if out_dir is not None else new_run_dir(config.output.dir, f"{config.name}-{kind}-sweep",
                                                                 config.seed)
    out.mkdir(parents=True, exist_ok=True)
    labels = [_point_label(a, v) for a, v in points]
    study = _open_study(out, f"{config.name}-{kind}", kind, labels, seeds)
    done = _done_trials(study)
    base = json.loads(config.model_dump_json())
    jobs, results = [], {}
    for (axis, value), label in zip(points, labels, strict=True):
        for seed in seeds:
            run_dir = out / "runs" / f"{label.replace('=', '-').replace(':', '-')}-s{seed}"
            if (label, seed) in done and (Path(done[(label, seed)]["run_dir"]) / "record.json").exists():
                record = json.loads((Path(done[(label, seed)]["run_dir"]) / "record.json").read_text())
                results[(label, seed)] = (axis, value, record)
                continue
            jobs.append({"config": base, "axis": axis, "value": value, "seed": seed, "run_dir": str(run_dir),
                         "label": label, "model_factory": model_factory})

    def on_done(job: dict, res: dict) -> None:
        record = res["record"]
        summary = summarize_run(record)
        _record_trial(study, job["label"], job["seed"], labels, seeds, summary, record["status"], res["run_dir"])
        results[(job["label"], job["seed"])] = (job["axis"], job["value"], record)
        if not quiet:
            head = summary[-1]["clean_acc"] if summary else None
            print(f"  {job['label']} seed {job['seed']}: {record['status']}, clean RLP acc "
                  f"{'-' if head is None else f'{head:.4f}'} ({res['elapsed_s']:.1f} s)", flush=True)

    _execute(jobs, workers or default_workers(), on_done, quiet)
    runs, epochs = [], []
    for label in labels:
        for seed in seeds:
            axis, value, record = results[(label, seed)]
            info = {"setting": label, "axis": axis, "value": value, "seed": seed, "run": record.get("name")}
            for r in summarize_run(record):
                runs.append({**info, **r})
            for r in rows_of(record):
                epochs.append({**info, "status": record.get("status"), **r})
    table = aggregate(runs, labels)
    res = SweepResult(kind, runs, epochs, table, out, elapsed_s=time.perf_counter() - t0)
    res.files = _write_sweep_tables(res)
    if plots:
        from dicelab.memorization.plots import plot_sweep

        res.files += plot_sweep(out)
    res.elapsed_s = time.perf_counter() - t0
    (out / "sweep.json").write_text(json.dumps({"axis": kind, "seeds": seeds, "settings": labels,
                                                "elapsed_s": res.elapsed_s, "table": table}, indent=1))
    return res


def _check_taps(config: RunConfig) -> None:
    from dicelab.data import dataset_info
    from dicelab.memorization.heads import resolve_taps
    from dicelab.models import build_model

    info = dataset_info(config.data.name)
    with torch.random.fork_rng(devices=[]):
        model = build_model(config.model.name, info.input_shape, info.num_classes, **config.model.build_kwargs())
    resolve_taps(model, config.memorization.taps)


def _std(xs: list[float]) -> float | None:
    if len(xs) < 2:
        return 0.0 if xs else None
    mu = sum(xs) / len(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1))


def aggregate(runs: list[dict[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (setting, tap, set); the ratio to the baseline / first setting."""
    table = []
    keys = list(dict.fromkeys((r["tap"], r["set"]) for r in runs))
    for label in labels:
        for tap, s in keys:
            mine = [r for r in runs if r["setting"] == label and r["tap"] == tap and r["set"] == s]
            if not mine:
                continue
            row: dict[str, Any] = {"setting": label, "axis": mine[0]["axis"], "value": mine[0]["value"], "tap": tap,
                                   "set": s, "seeds": len(mine), "n": mine[0]["n"], "d": mine[0]["d"],
                                   "head_params": mine[0]["head_params"], "depth": mine[0].get("depth"),
                                   "diverged": sum(r["status"] == "diverged" for r in mine),
                                   "baseline": label == "baseline"}
            for k in ("clean_acc", "online_acc", "heldout_acc", "r_proxy", "train_acc", "test_acc", "first_online_acc"):
                vals = [r[k] for r in mine if r.get(k) is not None]
                row[k] = sum(vals) / len(vals) if vals else None
                row[f"{k}_std"] = _std(vals)
            table.append(row)
    for tap, s in keys:
        ref = next((r for r in table if r["tap"] == tap and r["set"] == s), None)
        for r in table:
            if r["tap"] == tap and r["set"] == s:
                ok = ref is not None and ref["clean_acc"] and r["clean_acc"] is not None
                r["ratio"] = r["clean_acc"] / ref["clean_acc"] if ok else None
    return table


def _write_sweep_tables(res: SweepResult) -> list[Path]:
    import pandas as pd

    files = [res.out_dir / "sweep.csv", res.out_dir / "sweep_epochs.csv", res.out_dir / "sweep_summary.csv"]
    pd.DataFrame(res.runs).to_csv(files[0], index=False)
    pd.DataFrame(res.epochs).to_csv(files[1], index=False)
    pd.DataFrame(res.table).to_csv(files[2], index=False)
    return files


# -- reading runs back -----------------------------------------------------------------------------
def _read_record(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir)
    path = path / "record.json" if path.is_dir() else path
    if not path.exists():
        raise DicelabError(f"{path}: no run record here")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DicelabError(f"{path}: not a readable run record ({exc.msg})") from None


def depth_curve(run_dir: str | Path, last: int = LAST_EPOCHS):
    """A run's final clean RLP accuracy per tap, in forward order (pandas DataFrame: tap, depth, d,
    head_params, clean_acc, r_proxy, chance)."""
    import pandas as pd

    summary = summarize_run(_read_record(run_dir), last=last)
    df = pd.DataFrame(summary)
    if df.empty:
        raise DicelabError(f"{run_dir}: the run record holds no memorization metrics")
    return df.sort_values(["depth", "set"]).reset_index(drop=True)


def list_taps(config: RunConfig, *, model: nn.Module | None = None) -> list[dict[str, Any]]:
    """Every named module of the config's model with its output shape (one eval forward of two samples)."""
    from dicelab.memorization.heads import module_names
    from dicelab.seeding import SeedBank
    from dicelab.train.engine import build_model_for, load_data_for

    data = load_data_for(config)
    net = model if model is not None else build_model_for(config, data, SeedBank(config.seed))
    shapes: dict[str, list[int]] = {}
    handles = []
    for name, mod in module_names(net).items():
        if not name:
            continue

        def grab(m, args, out, name=name):
            t = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(t, torch.Tensor):
                shapes[name] = list(t.shape[1:])

        handles.append(mod.register_forward_hook(grab))
    net.eval()
    try:
        with torch.no_grad():
            net(data.train.x[:2])
    finally:
        for h in handles:
            h.remove()
    linears = [n for n, m in module_names(net).items() if isinstance(m, nn.Linear)]
    return [{"name": n, "type": type(m).__name__, "output_shape": shapes.get(n),
             "penultimate": bool(linears) and n == linears[-1]}
            for n, m in module_names(net).items() if n]


def probe_run(run_dir: str | Path, tap: str, *, epochs: int = 300, lr: float = 1e-2, head: str = "linear",
              epoch: int | None = None) -> dict[str, Any]:
    """Offline probe of a finished run's checkpoint at ``tap``, beside the capacity floor and the online
    head's clean accuracy at the same checkpoint (spec 04 §7)."""
    from dicelab.memorization.bank import RandomLabelBank
    from dicelab.memorization.heads import RLPHeads
    from dicelab.memorization.hook import heldout_split
    from dicelab.memorization.probe import capacity_floor, fit_offline_probe
    from dicelab.seeding import SeedBank
    from dicelab.train.checkpoint import load_checkpoint
    from dicelab.train.engine import build_model_for, load_data_for

    folder = Path(run_dir)
    record = _read_record(folder)
    cfg = validate(RunConfig, record["config"], source=str(folder / "record.json"))
    mem = _require_memorization(cfg)
    ckpt = load_checkpoint(folder / "checkpoint.pt")
    if epoch is not None and int(ckpt["next_epoch"]) != epoch:
        raise ConfigError(f"--epoch: {folder}/checkpoint.pt holds the weights after epoch {ckpt['next_epoch']}, "
                          f"not {epoch} (only the latest checkpoint is kept)")
    seeds = SeedBank(cfg.seed)
    data = load_data_for(cfg)
    model = build_model_for(cfg, data, seeds)
    model.load_state_dict(ckpt["model"])
    bank = RandomLabelBank(len(data.train), mem.num_labels, generator=seeds.generator("memorization.bank"),
                           mode=mem.mode, per_class=mem.per_class, targets=data.train.y, num_sets=mem.num_sets)
    split = heldout_split(data, mem.heldout_split)
    held_bank = RandomLabelBank(len(split), mem.num_labels, generator=seeds.generator("memorization.heldout"),
                                mode=mem.mode, per_class=mem.per_class, targets=split.y, num_sets=mem.num_sets)
    gen = seeds.generator("memorization.probe")
    res = fit_offline_probe(model, tap, data.train.x, bank, generator=gen, head=head, epochs=epochs, lr=lr,
                            heldout=(split.x, held_bank) if len(split) else None, pool=mem.pool)
    floor = capacity_floor(res.d, res.n, res.m, generator=seeds.generator("memorization.probe.floor"), head=head,
                           epochs=epochs, lr=lr)
    online = None
    from dicelab.memorization.config import tap_key

    taps_cfg = [tap_key(t) for t in mem.taps]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rlp = RLPHeads(model, mem.taps, bank, generator=seeds.generator("memorization.heads"), head=mem.head,
                       pool=mem.pool, num_classes=data.num_classes, rank=mem.rank, example_input=data.train.x[:2])
    hook_state = next((s for s in ckpt.get("hooks", []) if isinstance(s, dict) and "rlp" in s), None)
    if hook_state is not None:
        rlp.load_state_dict(hook_state["rlp"], strict=False)
        accs = rlp.accuracy(model, data.train.x, bank, y=data.train.y)
        match = [k for k in accs if k[0] == tap_key(tap) or (tap == "penultimate" and k[0] == rlp.taps[0].key)]
        if tap_key(tap) in taps_cfg and match:
            online = accs[match[0]]
    rlp.remove()
    return {"run": str(folder), "tap": tap, "epoch": int(ckpt["next_epoch"]), **res.to_json(),
            "capacity_floor": floor, "online_clean_acc": online, "chance": 1.0 / mem.num_labels}
