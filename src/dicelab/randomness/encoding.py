"""The reference code's raw 22-number PSO vector ↔ a ``RandomnessConfig`` (spec 01 §4 decoding, §6).

The reference decodes coordinate x of each dimension as: round (shuffle, batch size), ceil (flip),
max(1, ceil) (optimizer), 10^−x (lr; weight noise, off when x ≥ 6), contrast 0 → off, the rest as is.
:func:`encode` maps a config back to the canonical point of its decoding cell, so
``encode(decode(v)) == v`` for every ``v`` on that lattice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dicelab.errors import ConfigError
from dicelab.randomness.config import RandomnessConfig
from dicelab.randomness.registry import techniques

__all__ = ["decode", "encode", "DEFAULT_VECTOR", "FLIP_CODES", "OPTIMIZER_CODES"]

DEFAULT_VECTOR = (0, 1, 0, 0, 0, 0, 0, 0, 0.05, 0, 0, 0, 0, 0, 1, 3, 0, 128, 0, 6, 0, 0)
FLIP_CODES = {"none": 1, "horizontal_and_vertical": 2, "horizontal": 3, "vertical": 4}
OPTIMIZER_CODES = {"sgd": 1, "momentum": 2, "adam": 3}
_WEIGHT_NOISE_OFF = 6.0
_DIGITS = 12   # exponents are rounded so that 10^−x → −log10 returns x exactly


def decode(raw: Sequence[float]) -> RandomnessConfig:
    """The ``[randomness]`` table of a reference raw vector (22 numbers, in paper-index order)."""
    values = [float(v) for v in raw]
    if len(values) != 22:
        raise ConfigError(f"a reference vector has 22 numbers, got {len(values)}")
    table: dict[str, object] = {}
    for cls, x in zip(techniques(), values, strict=True):
        name = cls.name
        if name == "shuffle":
            table[name] = bool(round(x))
        elif name == "flip":
            code = max(1, math.ceil(x))
            table[name] = {v: k for k, v in FLIP_CODES.items()}[min(code, 4)]
        elif name == "optimizer":
            code = max(1, math.ceil(x))
            table[name] = {v: k for k, v in OPTIMIZER_CODES.items()}[min(code, 3)]
        elif name == "lr":
            table[name] = 10.0 ** -x
        elif name == "batch_size":
            table[name] = int(round(x))
        elif name == "weight_noise":
            table[name] = 0.0 if x >= _WEIGHT_NOISE_OFF else 10.0 ** -x
        else:
            table[name] = x
    return RandomnessConfig.model_validate(table)


def encode(cfg: RandomnessConfig) -> list[float]:
    """The canonical reference vector of ``cfg``'s main knobs; techniques left unset count as off.
    ``optimizer``, ``lr`` and ``batch_size`` must be set: the reference has no "inherit"."""
    out: list[float] = []
    for cls in techniques():
        name = cls.name
        table = cfg.table(name)
        value = table[cls.main().name] if table is not None else cls.main().off
        if value is None and name in ("optimizer", "lr", "batch_size"):
            raise ConfigError(f"randomness.{name}: the reference vector needs an explicit value")
        if name == "shuffle":
            out.append(1.0 if value else 0.0)
        elif name == "flip":
            out.append(float(FLIP_CODES[value]))
        elif name == "optimizer":
            out.append(float(OPTIMIZER_CODES[value]))
        elif name == "lr":
            out.append(round(-math.log10(value), _DIGITS))
        elif name == "batch_size":
            out.append(float(value))
        elif name == "weight_noise":
            out.append(_WEIGHT_NOISE_OFF if value == 0 else round(-math.log10(value), _DIGITS))
        elif name == "weight_init":
            out.append(float(value) if value is not None else 0.0)
        else:
            out.append(float(value))
    return out
