"""The study file (spec 02 §9): ``[study]``, ``[study.pso]``, ``[task]``, ``[search]``, ``[fitness]``.

``[task]`` is a run config (spec 00) with three shortcuts, ``dataset``, ``model`` (a name) and ``epochs``;
its ``[task.randomness]`` table holds fixed settings that every trial shares (searched coordinates override
them). Errors name the field (``fitness.seeds: Input should be greater than or equal to 1``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from dicelab.config import RunConfig, apply_overrides, read_toml, validate
from dicelab.strict import StrictModel

__all__ = ["StudyConfig", "StudySection", "PSOOptions", "SearchConfig", "FitnessConfig", "load_study_config",
           "config_hash", "first_difference", "SAMPLER_NAMES"]

SAMPLER_NAMES = ("pso", "random-sparse", "random", "tpe", "cmaes", "qmc", "grid-ofat")


class PSOOptions(StrictModel):
    n_particles: int = Field(20, ge=1)
    inertia: float = 0.7298
    cognitive: float = 1.49618
    social: float = 1.49618
    velocity_clamp: float = Field(0.2, gt=0.0)
    sparse_k: int | None = Field(4, ge=0)
    prescreen: int = Field(0, ge=0)
    max_iterations: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    wait_s: float = Field(10.0, ge=0.0)


class StudySection(StrictModel):
    name: str = "study"
    sampler: str = "pso"
    n_trials: int = Field(100, ge=1)
    timeout_s: float | None = Field(None, gt=0.0)
    seed: int = Field(0, ge=0)
    storage: str | None = None               # default: journal:runs/<name>/study.journal
    runs_dir: Path = Path("runs")            # trial records go to <runs_dir>/<name>/trials/
    heartbeat_s: float = Field(30.0, gt=0.0)
    grace_s: float = Field(300.0, gt=0.0)
    retry_failed: int = Field(0, ge=0)
    max_consecutive_failures: int = Field(5, ge=1)
    pso: PSOOptions = Field(default_factory=PSOOptions)

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, v: str) -> str:
        if v not in SAMPLER_NAMES:
            raise ValueError(f"unknown sampler {v!r} (known: {', '.join(SAMPLER_NAMES)})")
        return v

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\:") or v.startswith("."):
            raise ValueError(f"{v!r} is not a plain name (no '/', '\\\\', ':' or leading '.')")
        return v


class SearchConfig(StrictModel):
    techniques: Literal["all"] | list[str] = "all"
    always: list[str] = Field(default_factory=lambda: ["shuffle", "weight_init", "optimizer", "lr",
                                                       "lr_schedule", "batch_size", "batch_schedule"])
    off_decades: float = Field(1.0, gt=0.0)
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)


class FitnessConfig(StrictModel):
    model_config = ConfigDict(**StrictModel.model_config, ser_json_inf_nan="constants")   # -inf survives JSON

    seeds: int = Field(1, ge=1)
    seed_policy: Literal["common", "fresh"] = "common"
    select: Literal["last", "best_epoch"] = "last"
    cut_threshold: Literal["auto"] | float | None = "auto"      # auto = 1.2 / n_classes; None: never cut
    diverged_value: float | Literal["chance"] = -math.inf
    prescreen_epochs: int = Field(1, ge=1)
    pruner: Literal["none", "median", "hyperband", "wilcoxon"] = "none"

    @model_validator(mode="after")
    def _wilcoxon_needs_seeds(self) -> FitnessConfig:
        if self.pruner == "wilcoxon" and self.seeds < 3:
            raise ValueError(f"pruner = 'wilcoxon' prunes seed by seed and needs seeds >= 3 (got {self.seeds})")
        return self


def _task_shortcuts(data: Any) -> Any:
    if not isinstance(data, Mapping):
        return data
    data = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
    if "dataset" in data:
        data.setdefault("data", {})["name"] = data.pop("dataset")
    if isinstance(data.get("model"), str):
        data["model"] = {"name": data["model"]}
    if "epochs" in data:
        data.setdefault("train", {})["epochs"] = data.pop("epochs")
    return data


class StudyConfig(StrictModel):
    model_config = ConfigDict(**StrictModel.model_config, ser_json_inf_nan="constants")

    study: StudySection = Field(default_factory=StudySection)
    task: RunConfig = Field(default_factory=RunConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    fitness: FitnessConfig = Field(default_factory=FitnessConfig)

    @field_validator("task", mode="before")
    @classmethod
    def _shortcuts(cls, v: Any) -> Any:
        return _task_shortcuts(v)

    # -- derived values ----------------------------------------------------------------------------
    def space(self):
        from dicelab.study.space import SearchSpace

        return SearchSpace.from_catalog(self.search.techniques, always=self.search.always,
                                        bounds=self.search.bounds or None, off_decades=self.search.off_decades)

    def storage_url(self) -> str:
        if self.study.storage:
            return self.study.storage
        return f"journal:{self.study.runs_dir / self.study.name / 'study.journal'}"

    def study_dir(self) -> Path:
        return self.study.runs_dir / self.study.name

    def to_json(self) -> str:
        return self.model_dump_json()


def load_study_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                      data: Mapping[str, Any] | None = None) -> StudyConfig:
    """Read a study file (or a dict), apply ``--set`` overrides, validate, and check the search space."""
    raw: dict[str, Any] = read_toml(path) if path is not None else json.loads(json.dumps(dict(data or {})))
    raw = apply_overrides(raw, overrides)
    if isinstance(raw.get("task"), Mapping):
        raw["task"] = _task_shortcuts(raw["task"])
    cfg = validate(StudyConfig, raw, source=str(path) if path is not None else "")
    cfg.space()    # unknown techniques, bad bounds: fail now, before any worker starts
    return cfg


# Runtime knobs that may change when a study is resumed: they do not change what a trial means.
_UNHASHED = (("study", "n_trials"), ("study", "timeout_s"), ("study", "storage"), ("study", "heartbeat_s"),
             ("study", "grace_s"), ("study", "max_consecutive_failures"), ("study", "runs_dir"))


def _hashed_view(cfg_json: Mapping[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(cfg_json))
    for section, key in _UNHASHED:
        data.get(section, {}).pop(key, None)
    data.get("task", {}).pop("output", None)
    data.get("task", {}).get("train", {}).pop("progress", None)
    return data


def config_hash(cfg: StudyConfig | Mapping[str, Any]) -> str:
    data = json.loads(cfg.to_json()) if isinstance(cfg, StudyConfig) else cfg
    text = json.dumps(_hashed_view(data), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def first_difference(stored: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """The first field (dotted path) whose value differs between two config dicts, ignoring runtime knobs."""
    a, b = _flatten(_hashed_view(stored)), _flatten(_hashed_view(new))
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            return f"{key} (stored {a.get(key, '<absent>')!r}, now {b.get(key, '<absent>')!r})"
    return None
