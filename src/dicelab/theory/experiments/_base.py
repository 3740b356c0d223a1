"""Experiment registry, results, checks and the on-disk record (result.json + PNGs)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dicelab.errors import ConfigError
from dicelab.registry import Registry
from dicelab.theory._autodiff import threads_for
from dicelab.train.record import library_versions, write_json_atomic

__all__ = ["Check", "ExperimentResult", "Experiment", "EXPERIMENTS", "register", "run_experiment", "new_run_dir"]


@dataclass
class Check:
    """One acceptance check: the measured number, the threshold in words, pass/fail."""

    name: str
    measured: float
    threshold: str
    passed: bool


@dataclass
class ExperimentResult:
    """What an experiment measured: config, metrics (numbers), checks, runtime, plot series, written files."""

    id: str
    mode: str
    seed: int
    config: dict[str, Any]
    metrics: dict[str, Any]
    checks: list[Check]
    runtime_s: float
    series: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "mode": self.mode, "seed": self.seed, "config": _jsonable(self.config),
            "metrics": _jsonable(self.metrics), "checks": [asdict(c) for c in self.checks],
            "passed": self.passed, "runtime_s": self.runtime_s, "timing": _jsonable(self.timing),
            "series": _jsonable(self.series),
            "versions": library_versions(),
        }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.floating | np.integer):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


RunFn = Callable[[str, int, dict[str, Any]], ExperimentResult]


@dataclass
class Experiment:
    """A calibrated experiment: id, one-line description, noise, regime, expected α-exponent, fast runtime."""

    id: str
    title: str
    noise: str
    regime: str
    exponent: str
    fast_runtime: str
    run: RunFn

    def __call__(self, mode: str = "fast", seed: int = 0, **overrides: Any) -> ExperimentResult:
        return self.run(mode, seed, overrides)


EXPERIMENTS: Registry[Experiment] = Registry("experiment", "experiment")


def register(exp: Experiment) -> Experiment:
    return EXPERIMENTS.register(exp.id, exp)


def check(name: str, measured: float, ok: bool, threshold: str) -> Check:
    return Check(name, float(measured), threshold, bool(ok))


def new_run_dir(root: str | Path) -> Path:
    """A new numbered sub-folder ``root/NNN`` (existing runs are never overwritten)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    nums = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    n = max(nums, default=0) + 1
    while True:
        d = root / f"{n:03d}"
        try:
            d.mkdir()
            return d
        except FileExistsError:
            n += 1


def run_experiment(
    name: str, mode: str = "fast", seed: int = 0, out: str | Path | None = None, plots: bool = True,
    **overrides: Any,
) -> ExperimentResult:
    """Run experiment ``name`` (``"E1"`` … ``"E6"``) in ``mode`` ``"fast"`` or ``"full"``.

    With ``out``, writes ``out/<NNN>/result.json`` (config, metrics, checks, runtime, versions) and the PNG
    figures into a new numbered sub-folder of ``out``. ``overrides`` (e.g. ``chains=``, ``alphas=``) replace
    configuration values.
    """
    from dicelab.theory import experiments as _ex  # noqa: F401 - registers everything

    experiment = EXPERIMENTS.get(name.upper())
    if mode not in ("fast", "full"):
        raise ConfigError(f"mode must be 'fast' or 'full', got {mode!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    t0, c0 = time.perf_counter(), time.process_time()
    # every tensor here is small (S·d ≤ 2·10⁴): intra-op threads only add synchronisation cost
    with threads_for(1, 0):
        res = experiment.run(mode, seed, {k: v for k, v in overrides.items() if v is not None})
    res.runtime_s = time.perf_counter() - t0
    # CPU seconds of this (single-threaded) run: equals the wall time on an idle machine, and unlike the
    # wall time it does not grow when something else shares the cores.
    res.timing["cpu_s"] = time.process_time() - c0
    # wall times are not measurements of the dynamics: keep them out of the (bit-reproducible) metrics
    for k in [k for k in res.metrics if "runtime" in k]:
        res.timing[k] = res.metrics.pop(k)
    if out is not None:
        d = new_run_dir(out)
        if plots:
            from dicelab.theory.plots import render_all

            res.files += [str(p) for p in render_all(res.series, d, prefix=res.id)]
        path = d / "result.json"
        write_json_atomic(path, res.to_json())
        res.files.append(str(path))
    return res


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a result.json (the folder or the file)."""
    p = Path(path)
    if p.is_dir():
        p = p / "result.json"
    if not p.is_file():
        raise ConfigError(f"no result.json at {path}")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"corrupt result file {p}: {exc}") from None


def overlay_series(name: str, title: str, xlabel: str, ylabel: str, curves: list[dict[str, Any]],
                   limit_x: Any = None, limit_y: Any = None, limit_label: str = "limit") -> dict[str, Any]:
    """F1-style figure spec: per α the projected mean ± 2 SE and ± 1 SD bands, raw mean dotted, limit dashed."""
    return {"name": name, "kind": "overlay", "title": title, "xlabel": xlabel, "ylabel": ylabel,
            "curves": curves, "limit": None if limit_x is None else {"x": limit_x, "y": limit_y, "label": limit_label}}


def curve(label: str, x: Any, mean: Any, se: Any = None, sd: Any = None, raw: Any = None) -> dict[str, Any]:
    return {"label": label, "x": x, "mean": mean, "se": se, "sd": sd, "raw": raw}


def loglog_series(name: str, title: str, xlabel: str, ylabel: str, x: Any, y: Any, slope: float,
                  slope_se: float, refs: tuple[float, ...] = (-1.0, -2.0)) -> dict[str, Any]:
    """F2-style figure spec: log-log points, fitted slope ± SE, reference slopes."""
    return {"name": name, "kind": "loglog", "title": title, "xlabel": xlabel, "ylabel": ylabel, "x": x, "y": y,
            "slope": slope, "slope_se": slope_se, "refs": list(refs)}
