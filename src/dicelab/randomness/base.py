"""The pieces every technique is made of: :class:`Level`, :class:`Knob` and :class:`Technique`.

A technique is a class with a name, a level, knobs (the first is the searched *main knob*, the rest are
options) and the hook points it uses. An instance holds its resolved knob values and its own
``torch.Generator``; :class:`~dicelab.randomness.techniqueset.TechniqueSet` calls its hooks in the fixed
order of spec 01 §3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal

import torch
from torch import nn

__all__ = ["Level", "Knob", "Technique", "Context", "UNSET"]


class Level(StrEnum):
    """The study's four types of randomness."""

    DATA = "data"
    MODEL = "model"
    OPTIMIZATION = "optimization"
    LEARNING = "learning"

    def __str__(self) -> str:
        return self.value


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "no paper-faithful value different from the default"


def _fmt(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True)
class Knob:
    """One setting of a technique.

    ``off`` is the value at which the technique does nothing (main knob) or the option's default;
    ``[low, high]`` is the search range (the reference PSO bounds) and ``domain`` the values a config may
    hold (``open_high`` makes it ``[lo, hi)``). ``paper`` is the option's paper-faithful value, used by
    ``preset = "paper"``.
    """

    name: str
    kind: Literal["float", "int", "bool", "choice"]
    off: object
    low: float | None = None
    high: float | None = None
    scale: Literal["linear", "log"] = "linear"
    domain: tuple[float, float] | None = None
    open_high: bool = False
    choices: tuple[str, ...] = ()
    search: bool = True
    nullable: bool = False     # None is a valid value (off = None means "inherit" or "unclipped")
    paper: object = UNSET
    help: str = ""

    def midpoint(self) -> object:
        """The middle of the search range: arithmetic (linear) or geometric (log); for choices the middle one."""
        if self.kind == "bool":
            return True
        if self.kind == "choice":
            return self.choices[len(self.choices) // 2]
        if self.scale == "log":
            mid = math.sqrt(self.low * self.high)
        else:
            mid = (self.low + self.high) / 2
        return int(round(mid)) if self.kind == "int" else mid

    def domain_text(self) -> str:
        lo, hi = self.domain
        lo_s = "-inf" if lo == -math.inf else _fmt(lo)
        hi_s = "inf" if hi == math.inf else _fmt(hi)
        return f"[{lo_s}, {hi_s}{')' if self.open_high else ']'}"

    def validate(self, value: object) -> object:
        """The value coerced to the knob's kind; ``ValueError`` naming what is wrong otherwise."""
        if value is None:
            if self.nullable or self.off is None:
                return None
            raise ValueError("None is not allowed")
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{value!r} is not one of {', '.join(self.choices)}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        if self.kind == "int":
            if float(value) != int(value):
                raise ValueError(f"expected an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not finite")
        if self.domain is not None:
            lo, hi = self.domain
            if value < lo or value > hi or (self.open_high and value >= hi):
                raise ValueError(f"{_fmt(value)} outside {self.domain_text()}")
        return value

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high, "scale": self.scale,
                "off": self.off, "domain": list(self.domain) if self.domain else None,
                "choices": list(self.choices), "search": self.search}


@dataclass
class Context:
    """What techniques may need beyond their own knobs, filled in by the technique set as training is set up."""

    device: torch.device
    preset: str = "none"
    num_classes: int | None = None
    num_train: int | None = None                      # training-set size (shuffle draws orders of it)
    per: str = "sample"                               # augmentation: one draw per sample, or per batch
    resample: str = "fused"                           # augmentation: one affine resampling, or one per transform
    padding: str = "reflection"
    sites: dict[str, list[str]] | None = None         # activation / dropout / connect module names
    model: nn.Module | None = None
    base_batch_size: int | None = None                # b0, the batch size after `configure`


class Technique:
    """Base class of the 22 techniques. Subclasses set the class variables and override the hooks they list."""

    name: ClassVar[str]
    level: ClassVar[Level]
    knobs: ClassVar[tuple[Knob, ...]]
    hooks: ClassVar[frozenset[str]]
    paper_index: ClassVar[int]
    paper_group: ClassVar[str]
    paper_column: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_images: ClassVar[bool] = False   # augmentation: (N, C, H, W) inputs only

    def __init__(self, values: Mapping[str, object], generator: torch.Generator, *, context: Context,
                 trace: bool = False) -> None:
        self.values = self.resolve(values)
        self.generator = generator
        self.context = context
        self.trace: dict[str, torch.Tensor] | None = {} if trace else None

    # -- knobs -------------------------------------------------------------------------------------
    @classmethod
    def main(cls) -> Knob:
        return cls.knobs[0]

    @classmethod
    def knob(cls, name: str) -> Knob:
        for k in cls.knobs:
            if k.name == name:
                return k
        raise KeyError(name)

    @classmethod
    def resolve(cls, given: Mapping[str, object]) -> dict[str, object]:
        """Every knob's value: ``given`` where set, else the off value / option default."""
        return {k.name: given.get(k.name, k.off) for k in cls.knobs}

    @classmethod
    def column(cls) -> str:
        return cls.paper_column or cls.name

    @property
    def value(self) -> object:
        """The main knob's value."""
        return self.values[self.knobs[0].name]

    def _record(self, key: str, tensor: torch.Tensor) -> None:
        if self.trace is not None:
            self.trace[key] = tensor.detach().clone()

    # -- hooks (only those in ``hooks`` are called) ---------------------------------------------------
    def uses(self, point: str) -> bool:
        """Whether this instance needs ``point`` (a mode may need fewer hooks than the class lists)."""
        return point in self.hooks

    def configure(self, train):  # -> TrainConfig
        return train

    def wrap_model(self, model: nn.Module) -> nn.Module:
        return model

    def bind(self, params: Sequence[nn.Parameter]) -> None:
        """Called once after ``wrap_model`` with the trainable tensors (techniques that target tensors)."""

    def on_epoch(self, state, plan) -> None:
        pass

    def on_batch(self, x: torch.Tensor, y: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def on_loss(self, per_sample: torch.Tensor, state) -> torch.Tensor:
        return per_sample

    def on_grads(self, params: Sequence[nn.Parameter], state) -> None:
        pass

    def before_step(self, params: Sequence[nn.Parameter], state) -> None:
        pass

    def after_step(self, params: Sequence[nn.Parameter], state) -> None:
        pass

    # -- resume ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.values})"
