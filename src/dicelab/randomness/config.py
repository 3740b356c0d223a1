"""``RandomnessConfig``: the ``[randomness]`` table of a run config (spec 01 §6).

Every technique is an optional field. A scalar sets its main knob (``dropout = 0.2``); an inline table sets
knobs and options (``dropconnect = { p = 0.2, mode = "weights" }``). Both forms validate to the same table,
so they compare equal. Values outside a knob's domain are errors naming the field
(``randomness.dropout: 1.2 outside [0, 1)``); values outside the search range but inside the domain are fine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationInfo, create_model, field_validator

from dicelab.randomness.base import UNSET
from dicelab.randomness.registry import technique, technique_names
from dicelab.strict import StrictModel

__all__ = ["RandomnessConfig", "AugmentOptions"]


class AugmentOptions(StrictModel):
    """Options shared by the augmentation techniques (flip … contrast)."""

    per: Literal["sample", "batch"] = "sample"             # batch: one draw shared by the batch (torchvision v2)
    resample: Literal["fused", "sequential"] = "fused"    # sequential: one resampling per transform (paper)
    padding: Literal["reflection", "zeros", "border"] = "reflection"


def _normalise(name: str, value: Any) -> dict[str, Any] | None:
    """A technique's scalar or table as a table that always holds the main knob."""
    if value is None:
        return None
    cls = technique(name)
    main = cls.main()
    table = dict(value) if isinstance(value, Mapping) else {main.name: value}
    known = [k.name for k in cls.knobs]
    for key in table:
        if key not in known:
            raise ValueError(f"unknown knob {key!r} (knobs: {', '.join(known)})")
    out: dict[str, Any] = {}
    for knob in cls.knobs:  # knob order, so equal tables compare (and print) the same
        if knob.name in table:
            try:
                out[knob.name] = knob.validate(table[knob.name])
            except ValueError as exc:
                raise ValueError(str(exc) if knob is main else f"{knob.name}: {exc}") from None
        elif knob is main:
            out[knob.name] = main.off
    return out


class _RandomnessBase(StrictModel):
    preset: Literal["none", "paper"] = "none"   # paper: every paper-faithful mode (never switches a technique on)
    seeds: dict[str, int] = Field(default_factory=dict)   # per-technique seed overrides (R1)
    augment: AugmentOptions = Field(default_factory=AugmentOptions)

    @field_validator("seeds")
    @classmethod
    def _known_seed_names(cls, v: dict[str, int]) -> dict[str, int]:
        names = technique_names()
        for key in v:
            if key not in names:
                raise ValueError(f"unknown technique {key!r} (known: {', '.join(names)})")
        return v

    # -- what is on ----------------------------------------------------------------------------------
    def table(self, name: str) -> dict[str, Any] | None:
        return getattr(self, name)

    def is_on(self, name: str) -> bool:
        table = self.table(name)
        return table is not None and table[technique(name).main().name] != technique(name).main().off

    def active(self) -> list[str]:
        """The techniques that are on (main knob not at its off value), in paper-index order."""
        return [n for n in technique_names() if self.is_on(n)]

    def augment_options(self) -> dict[str, str]:
        """``[randomness.augment]`` with the paper's sequential resampling under ``preset = "paper"``."""
        opts = self.augment.model_dump()
        if self.preset == "paper" and "resample" not in self.augment.model_fields_set:
            opts["resample"] = "sequential"
        return opts

    def resolved(self, name: str) -> dict[str, Any]:
        """Every knob of technique ``name``: set values, else paper values under the paper preset, else defaults."""
        cls = technique(name)
        given = self.table(name) or {}
        out = {}
        for knob in cls.knobs:
            if knob.name in given:
                out[knob.name] = given[knob.name]
            elif self.preset == "paper" and knob.paper is not UNSET:
                out[knob.name] = knob.paper
            else:
                out[knob.name] = knob.off
        return out

    # -- flat form (the parameter names 02-study gives Optuna) --------------------------------------
    def flat(self) -> dict[str, Any]:
        """``{"loss_noise": 0.1, "gradient_dropout": 0.1, "gradient_dropout.rescale": False, ...}``: each set
        technique's main knob under its name, options as ``name.option``; non-default preset, augment options
        and seeds as ``preset``, ``augment.<opt>``, ``seeds.<name>``. :meth:`from_flat` inverts it."""
        out: dict[str, Any] = {}
        if "preset" in self.model_fields_set or self.preset != "none":
            out["preset"] = self.preset
        for key in sorted(self.augment.model_fields_set):
            out[f"augment.{key}"] = getattr(self.augment, key)
        for key, value in self.seeds.items():
            out[f"seeds.{key}"] = value
        for name in technique_names():
            table = self.table(name)
            if table is None:
                continue
            main = technique(name).main().name
            out[name] = table[main]
            for key, value in table.items():
                if key != main:
                    out[f"{name}.{key}"] = value
        return out

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> RandomnessConfig:
        data: dict[str, Any] = {}
        for key, value in flat.items():
            head, _, rest = key.partition(".")
            if head in ("augment", "seeds"):
                data.setdefault(head, {})[rest] = value
            elif head == "preset":
                data["preset"] = value
            elif not rest:
                table = data.setdefault(head, {})
                table[technique(head).main().name] = value
            else:
                data.setdefault(head, {})[rest] = value
        return RandomnessConfig.model_validate(data)


def _validate_technique(cls, value: Any, info: ValidationInfo) -> dict[str, Any] | None:
    return _normalise(info.field_name, value)


RandomnessConfig = create_model(
    "RandomnessConfig",
    __base__=_RandomnessBase,
    __doc__="The [randomness] table: one optional field per technique (spec 01 §6).",
    __validators__={"_technique": field_validator(*technique_names(), mode="before")(_validate_technique)},
    **{name: (dict[str, Any] | None, None) for name in technique_names()},
)
