"""Run configuration: pydantic models loaded from TOML, with ``--set section.key=value`` overrides.

Every model forbids unknown fields, so a typo is an error that names the field, e.g.
``train.lrr: Extra inputs are not permitted``. :func:`load_run_config` turns every problem into a
one-line :class:`~dicelab.errors.ConfigError` (exit code 2 on the command line).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from dicelab.errors import ConfigError
from dicelab.memorization.config import MemorizationConfig
from dicelab.randomness.config import RandomnessConfig
from dicelab.strict import StrictModel

__all__ = ["StrictModel", "DataConfig", "ModelConfig", "TrainConfig", "OutputConfig", "RunConfig",
           "load_run_config", "apply_overrides", "parse_override", "format_validation_error", "validate"]


class DataConfig(StrictModel):
    name: str = "digits"
    data_dir: Path | None = None          # real datasets: where the files are (default ./data)
    download: bool = False                # real datasets: fetch missing files (never in tests or the demo)
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)   # last fraction of the official train set
    standardize: bool = False             # z-score inputs with training-split statistics
    options: dict[str, int | float | bool | str] = Field(default_factory=dict)  # loader options, e.g. teacher sizes

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from dicelab.data.base import DATASETS

        return DATASETS.check(v)


class ModelConfig(StrictModel):
    name: str = "mlp"
    widths: list[int] | None = None       # mlp: hidden widths; vgg: conv widths per block
    activation: str = "relu"
    options: dict[str, int | float | bool | str] = Field(default_factory=dict)  # e.g. vgg: dense, batchnorm

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        from dicelab.models import MODELS

        return MODELS.check(v)

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, v: str) -> str:
        from dicelab.models import ACTIVATIONS

        if v not in ACTIVATIONS:
            raise ValueError(f"unknown activation {v!r} (known: {', '.join(ACTIVATIONS)})")
        return v

    @field_validator("widths")
    @classmethod
    def _positive_widths(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(w < 1 for w in v)):
            raise ValueError("widths must be a non-empty list of positive integers")
        return v

    def build_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(self.options)
        kw["activation"] = self.activation
        if self.widths is not None:
            kw["widths"] = tuple(self.widths)
        return kw


class TrainConfig(StrictModel):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: str = "sgd"
    lr: float = Field(0.1, gt=0.0)
    momentum: float | None = Field(None, ge=0.0, le=1.0)   # None: the optimizer's own default
    weight_decay: float = Field(0.0, ge=0.0)
    optimizer_options: dict[str, Any] = Field(default_factory=dict)
    scheduler: Literal["constant", "step", "cosine", "exponential"] = "constant"
    step_size: int = Field(10, ge=1)      # scheduler = "step": epochs between decays
    gamma: float = Field(0.1, gt=0.0)     # scheduler = "step" / "exponential": decay factor
    loss_reduction: Literal["mean", "sum"] = "mean"
    grad_clip: float | None = Field(None, gt=0.0)   # max global gradient norm
    # A run whose mean per-sample training loss turns non-finite, or exceeds this (None: never), has
    # diverged: it stops with status "diverged". Cross-entropy starts near ln(classes), so 1e4 is far
    # past any run that could still recover.
    diverge_threshold: float | None = Field(1e4, gt=0.0)
    shuffle: bool = True                  # reshuffle every epoch with the `data.order` generator
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)
    progress: bool = True

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        from dicelab.optim.registry import OPTIMIZERS

        return OPTIMIZERS.check(v)

    @field_validator("device")
    @classmethod
    def _valid_device(cls, v: str) -> str:
        if v not in ("cpu", "cuda", "auto") and not v.startswith("cuda:"):
            raise ValueError(f"unknown device {v!r} (use cpu, cuda, cuda:N or auto)")
        return v


class OutputConfig(StrictModel):
    dir: Path = Path("runs")              # run records go to <dir>/<name>-s<seed>-<time>/
    checkpoint: bool = True               # save checkpoint.pt (weights, optimizer, generators) each epoch


class RunConfig(StrictModel):
    name: str = "run"
    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    memorization: MemorizationConfig | None = None   # the [memorization] table (spec 04): RLP heads
    randomness: RandomnessConfig = Field(default_factory=RandomnessConfig)   # the [randomness] table (spec 01)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line naming each failing field: ``train.lr: Input should be greater than 0 (got -1.0)``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {err.get('input')!r})"
        parts.append(f"{loc}: {msg}{got}")
    return "; ".join(parts)


def validate(model: type[BaseModel], data: Mapping[str, Any], *, source: str = "", prefix: str = ""):
    """``model.model_validate(data)`` with errors as one-line :class:`ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where = f"{source}: " if source else ""
        raise ConfigError(where + format_validation_error(exc, prefix)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.05"`` → (["train", "lr"], 0.05). Values are TOML literals; anything else is a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"--set {text!r}: empty field name")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as adam
    return path, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a raw config dict (in place, returned for chaining)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a table")
            node = child
        node[path[-1]] = value
    return data


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def load_run_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                    data: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a run config from ``path`` (TOML) or ``data``, apply overrides, validate."""
    raw: dict[str, Any] = read_toml(path) if path is not None else dict(data or {})
    apply_overrides(raw, overrides)
    return validate(RunConfig, raw, source=str(path) if path is not None else "config")
