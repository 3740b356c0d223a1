"""The search space of a study, built from the catalog registry (spec 02 §2).

Every searched technique contributes one **coordinate** ``u`` (its main knob). Samplers move in coordinate
space; :meth:`SearchSpace.decode` turns a position into a :class:`RandomnessConfig`. Optuna stores one
parameter per coordinate: a float for numeric knobs (the coordinate itself, so a log knob is stored as its
exponent under ``<name>:log10``) and the choice for categorical ones.

Two presets:

* :meth:`SearchSpace.from_catalog` — dicelab's own space. The learning rate is searched in [1e-4, 1]
  because dicelab's loss is the batch mean (the reference range 1e-5–1e-1 applied to a batch sum).
* :meth:`SearchSpace.paper` — the 22 raw coordinates of the reference code, decoded as it decoded them
  (:mod:`dicelab.randomness.encoding`), for imported logs and paper-faithful runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd

from dicelab.errors import ConfigError
from dicelab.randomness import encoding
from dicelab.randomness.config import RandomnessConfig
from dicelab.randomness.registry import technique, technique_names, techniques

__all__ = ["Dim", "SearchSpace", "DEFAULT_ALWAYS", "CATALOG_DEFAULT_BOUNDS", "PAPER_COLUMNS",
           "PAPER_BOUNDS", "PAPER_WIDENED_BOUNDS", "paper_strengths"]

DEFAULT_ALWAYS = ("shuffle", "weight_init", "optimizer", "lr", "lr_schedule", "batch_size", "batch_schedule")
# dicelab's loss is the batch mean: the reference lr range (for a batch sum) moves up by about log10(batch).
CATALOG_DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {"lr": (1e-4, 1.0)}

KINDS = ("linear", "log", "log_off", "int", "int_log2", "categorical")


@dataclass(frozen=True)
class Dim:
    """One coordinate: its Optuna name, the technique it sets and how ``u`` decodes to the knob's value.

    ``low``/``high`` bound the coordinate; ``on_low``/``on_high`` bound the part of it where the technique is
    on (what a sparse start draws for an "on" technique); ``off`` is the knob's off value (None: it has none).
    """

    name: str
    technique: str
    level: str
    kind: str
    low: float
    high: float
    choices: tuple = ()
    off: Any = None
    optional: bool = True
    on_low: float | None = None
    on_high: float | None = None
    knob_low: float | None = None      # value-space bounds (log kinds: 10^low … 10^high, log_off: lo … hi)
    knob_high: float | None = None

    # -- one coordinate ----------------------------------------------------------------------------
    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices)
        return optuna.distributions.FloatDistribution(self.low, self.high)

    def value(self, u: float, clip: bool = True) -> Any:
        """The knob value of coordinate ``u`` (clipped to the bounds first, unless ``clip=False``)."""
        u = min(max(float(u), self.low), self.high) if clip or self.kind == "categorical" else float(u)
        if self.kind == "categorical":
            # equal-width cells [i - 0.5, i + 0.5); floor(u + 0.5) avoids round()'s ties-to-even
            return self.choices[min(max(math.floor(u + 0.5), 0), len(self.choices) - 1)]
        if self.kind == "linear":
            return u
        if self.kind == "log":
            return 10.0 ** u
        if self.kind == "log_off":
            return 0.0 if u < math.log10(self.knob_low) else 10.0 ** u
        if self.kind == "int":
            return int(math.floor(u + 0.5))
        if self.kind == "int_log2":
            return int(math.floor(2.0 ** u + 0.5))
        raise AssertionError(self.kind)

    def coordinate(self, value: Any) -> float:
        """The coordinate of a knob value; the off value maps to the off coordinate."""
        if self.kind == "categorical":
            try:
                return float(self.choices.index(value))
            except ValueError:
                raise ConfigError(f"{self.technique}: {value!r} is not one of {list(self.choices)}") from None
        if value is None:
            raise ConfigError(f"randomness.{self.technique}: the search space needs an explicit value")
        value = float(value)
        if self.kind == "linear" or self.kind == "int":
            return value
        if self.kind == "log":
            return math.log10(value)
        if self.kind == "log_off":
            return self.low if value == 0 else math.log10(value)
        if self.kind == "int_log2":
            return math.log2(value)
        raise AssertionError(self.kind)

    def off_coordinate(self) -> float:
        if self.off is None:
            raise ConfigError(f"{self.technique} has no off value, so it cannot be optional")
        return self.coordinate(self.off)

    def sample_on(self, rng: np.random.Generator) -> float:
        """A coordinate where the technique is on: uniform over its on-range, or a non-off choice."""
        if self.kind == "categorical":
            on = [i for i, c in enumerate(self.choices) if c != self.off]
            return float(on[int(rng.integers(len(on)))])
        lo = self.low if self.on_low is None else self.on_low
        hi = self.high if self.on_high is None else self.on_high
        return float(rng.uniform(lo, hi))


def _catalog_dim(name: str, *, optional: bool, bounds: tuple[float, float] | None, off_decades: float) -> Dim:
    cls = technique(name)
    knob = cls.main()
    level = str(cls.level)
    if knob.kind in ("bool", "choice"):
        choices = (False, True) if knob.kind == "bool" else tuple(knob.choices)
        if bounds is not None:
            raise ConfigError(f"search.bounds.{name}: a categorical knob has no bounds")
        m = len(choices)
        return Dim(name, name, level, "categorical", -0.5, m - 0.5, choices, knob.off, optional)
    lo, hi = (float(knob.low), float(knob.high)) if bounds is None else (float(bounds[0]), float(bounds[1]))
    if not lo < hi:
        raise ConfigError(f"search.bounds.{name}: low {lo:g} must be below high {hi:g}")
    try:
        knob.validate(int(lo) if knob.kind == "int" else lo)
        knob.validate(int(hi) if knob.kind == "int" and knob.scale != "log" else hi)
    except ValueError as exc:
        raise ConfigError(f"search.bounds.{name}: {exc}") from None
    if knob.kind == "int":
        if knob.scale == "log":
            return Dim(f"{name}:log2", name, level, "int_log2", math.log2(lo), math.log2(hi), off=knob.off,
                       optional=optional, knob_low=lo, knob_high=hi)
        return Dim(name, name, level, "int", lo, hi, off=knob.off, optional=optional, knob_low=lo, knob_high=hi)
    if knob.scale == "log":
        if lo <= 0:
            raise ConfigError(f"search.bounds.{name}: a log knob needs low > 0 (got {lo:g})")
        a, b = math.log10(lo), math.log10(hi)
        if knob.off == 0:
            return Dim(f"{name}:log10", name, level, "log_off", a - off_decades, b, off=0.0, optional=optional,
                       on_low=a, knob_low=lo, knob_high=hi)
        return Dim(f"{name}:log10", name, level, "log", a, b, off=knob.off, optional=optional,
                   knob_low=lo, knob_high=hi)
    return Dim(name, name, level, "linear", lo, hi, off=knob.off, optional=optional, knob_low=lo, knob_high=hi)


# -- the reference code's raw coordinates (data README) -------------------------------------------------
PAPER_COLUMNS = ("shuffle", "flip", "rotation", "zoom", "translation", "contrast", "input_noise",
                 "label_smoothing", "weight_init_std", "dropout", "dropconnect", "drnn", "activation_noise",
                 "loss_noise", "optimizer", "lr_exponent", "lr_schedule", "batch_size", "batch_schedule",
                 "weight_noise_exponent", "gradient_noise", "gradient_dropout")
PAPER_BOUNDS: dict[str, tuple[float, float]] = {
    "shuffle": (0, 1), "flip": (0, 4), "rotation": (0, 0.2), "zoom": (0, 0.2), "translation": (0, 0.2),
    "contrast": (0, 0.2), "input_noise": (0, 1), "label_smoothing": (0, 1), "weight_init_std": (0, 0.1),
    "dropout": (0, 0.5), "dropconnect": (0, 0.5), "drnn": (0, 1), "activation_noise": (0, 0.1),
    "loss_noise": (0, 1), "optimizer": (0, 3), "lr_exponent": (1, 5), "lr_schedule": (-1, 1),
    "batch_size": (128, 1024), "batch_schedule": (-1, 1), "weight_noise_exponent": (1, 6),
    "gradient_noise": (0, 1), "gradient_dropout": (0, 0.5)}
# The logged runs drifted past the final notebooks' bounds (data README, quirk 3).
PAPER_WIDENED_BOUNDS = {**PAPER_BOUNDS, "rotation": (0, 1), "zoom": (0, 1), "translation": (0, 1),
                        "contrast": (0, 1), "batch_size": (16, 1024)}
_PAPER_OFF = dict(zip(PAPER_COLUMNS, encoding.DEFAULT_VECTOR, strict=True))
# The "on" part of a raw coordinate where off sits inside or at the top of the range.
_PAPER_ON = {"flip": (1.0, None), "weight_noise_exponent": (None, 6.0)}
# Technique names of the reference analysis (rolling_dice_spearman.csv); optimizer splits rows instead.
_PAPER_STRENGTH_NAMES = {"weight_init_std": "weight_init_std", "lr_exponent": "lr",
                         "weight_noise_exponent": "weight_noise"}


def paper_strengths(raw: pd.DataFrame | Mapping[str, Any]) -> pd.DataFrame | dict[str, float]:
    """Strengths of raw reference coordinates in the data README's convention: ``round(shuffle)``, flip on/off
    (``ceil(x) >= 2``), lr = 10^−x, weight-noise η (0 when x ≥ 6), ``round(batch_size)``, every other column
    raw. Vectorised over a DataFrame of raw columns; a mapping gives a dict. Optimizer is not a strength."""
    if isinstance(raw, Mapping):
        frame = paper_strengths(pd.DataFrame({k: [float(v)] for k, v in raw.items()}))
        return {k: float(v) for k, v in frame.iloc[0].items()}
    out = {}
    for col in PAPER_COLUMNS:
        if col == "optimizer":
            continue
        x = raw[col].to_numpy(dtype=np.float64)
        if col == "shuffle" or col == "batch_size":
            s = np.round(x)
        elif col == "flip":
            s = (np.ceil(x) >= 2).astype(np.float64)
        elif col == "lr_exponent":
            s = 10.0 ** -x
        elif col == "weight_noise_exponent":
            s = np.where(x >= 6, 0.0, 10.0 ** -x)
        else:
            s = x
        out[_PAPER_STRENGTH_NAMES.get(col, col)] = s
    return pd.DataFrame(out, index=raw.index)


def _paper_dims(bounds: Mapping[str, Sequence[float]] | None) -> tuple[Dim, ...]:
    given = dict(bounds or {})
    unknown = sorted(set(given) - set(PAPER_COLUMNS))
    if unknown:
        raise ConfigError(f"search.bounds: unknown paper coordinate {unknown[0]!r} (known: {', '.join(PAPER_COLUMNS)})")
    dims = []
    for col, cls in zip(PAPER_COLUMNS, techniques(), strict=True):
        lo, hi = (float(v) for v in given.get(col, PAPER_BOUNDS[col]))
        on_lo, on_hi = _PAPER_ON.get(col, (None, None))
        dims.append(Dim(col, cls.name, str(cls.level), "linear", lo, hi, off=float(_PAPER_OFF[col]),
                        optional=cls.name not in DEFAULT_ALWAYS, on_low=on_lo, on_high=on_hi,
                        knob_low=lo, knob_high=hi))
    return tuple(dims)


@dataclass
class SearchSpace:
    """The coordinates a sampler moves in, and how a position becomes a ``RandomnessConfig``."""

    dims: tuple[Dim, ...]
    preset: str = "catalog"
    spec: dict[str, Any] = field(default_factory=dict)   # the arguments that rebuild it (to_json)

    def __post_init__(self) -> None:
        self.names = [d.name for d in self.dims]
        self.low = np.array([d.low for d in self.dims], dtype=np.float64)
        self.high = np.array([d.high for d in self.dims], dtype=np.float64)
        self.optional = np.array([d.optional for d in self.dims], dtype=bool)
        self._by_name = {d.name: d for d in self.dims}

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_catalog(cls, techniques: str | Sequence[str] = "all", *, always: Sequence[str] = DEFAULT_ALWAYS,
                     bounds: Mapping[str, Sequence[float]] | None = None, off_decades: float = 1.0) -> SearchSpace:
        """dicelab's own space: one coordinate per selected technique's main knob, in paper-index order.

        ``always`` techniques are searched for every particle; the others are optional (a sparse start
        switches only some of them on). ``bounds`` overrides a knob's value range, e.g. ``{"batch_size":
        [16, 256]}``."""
        known = technique_names()
        names = list(known) if techniques == "all" else list(techniques)
        for where, group in (("search.techniques", names), ("search.always", list(always)),
                             ("search.bounds", list(bounds or {}))):
            for n in group:
                if n not in known:
                    raise ConfigError(f"{where}: unknown technique {n!r} (known: {', '.join(known)})")
        if off_decades <= 0:
            raise ConfigError(f"search.off_decades: must be positive (got {off_decades:g})")
        merged = {**CATALOG_DEFAULT_BOUNDS, **{k: tuple(v) for k, v in (bounds or {}).items()}}
        for key, value in merged.items():
            if len(value) != 2:
                raise ConfigError(f"search.bounds.{key}: expected [low, high], got {list(value)}")
        dims = []
        for n in known:                           # registry order, whatever order the list had
            if n not in names:
                continue
            optional = n not in always
            dims.append(_catalog_dim(n, optional=optional, bounds=merged.get(n), off_decades=off_decades))
            if optional and dims[-1].off is None:
                raise ConfigError(f"search.always: {n} has no off value, so it must be always searched")
        if not dims:
            raise ConfigError("search.techniques: no technique selected")
        spec = {"techniques": names if techniques != "all" else "all", "always": list(always),
                "bounds": {k: list(v) for k, v in (bounds or {}).items()}, "off_decades": off_decades}
        return cls(tuple(dims), "catalog", spec)

    @classmethod
    def paper(cls, bounds: Mapping[str, Sequence[float]] | None = None) -> SearchSpace:
        """The reference code's 22 raw coordinates (names = the data README's columns)."""
        return cls(_paper_dims(bounds), "paper", {"bounds": {k: list(v) for k, v in (bounds or {}).items()}})

    # -- serialisation (stored in the study's user attrs) ----------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"preset": self.preset, **self.spec}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SearchSpace:
        data = json.loads(text)
        preset = data.pop("preset")
        if preset == "paper":
            return cls.paper(data.get("bounds") or None)
        return cls.from_catalog(data["techniques"], always=data["always"], bounds=data.get("bounds") or None,
                                off_decades=data["off_decades"])

    def describe(self) -> list[dict[str, Any]]:
        return [asdict(d) for d in self.dims]

    # -- positions ↔ configs ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.dims)

    def dim(self, name: str) -> Dim:
        return self._by_name[name]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {d.name: d.distribution() for d in self.dims}

    def clip(self, u: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(u, dtype=np.float64), self.low, self.high)

    def decode(self, u: Sequence[float] | np.ndarray, *, clip: bool = True) -> RandomnessConfig:
        """The config of position ``u``. Optional techniques at their off value are left unset.

        ``clip=False`` keeps coordinates outside the bounds (an enqueued trial's explicit values, which Optuna
        also takes as given); the knob's own domain still applies."""
        u = self.clip(u) if clip else np.asarray(u, dtype=np.float64)
        if self.preset == "paper":
            return encoding.decode(u.tolist())
        table: dict[str, Any] = {}
        for d, x in zip(self.dims, u, strict=True):
            value = d.value(x, clip)
            if d.optional and value == d.off:
                continue
            table[d.technique] = value
        return RandomnessConfig.model_validate(table)

    def encode(self, config: RandomnessConfig) -> np.ndarray:
        """The coordinates of ``config``'s main knobs; unset techniques count as off."""
        if self.preset == "paper":
            return np.array(encoding.encode(config), dtype=np.float64)
        out = []
        for d in self.dims:
            table = config.table(d.technique)
            value = table[technique(d.technique).main().name] if table is not None else d.off
            out.append(d.coordinate(value))
        return np.array(out, dtype=np.float64)

    def params(self, u: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """Optuna parameters of position ``u``: the coordinate for numeric dims, the choice for categorical."""
        u = self.clip(u)
        return {d.name: (d.value(x) if d.kind == "categorical" else float(x)) for d, x in zip(self.dims, u, strict=True)}

    def coordinates(self, params: Mapping[str, Any]) -> np.ndarray:
        """Inverse of :meth:`params` (a choice becomes its index)."""
        try:
            return np.array([d.coordinate(params[d.name]) if d.kind == "categorical" else float(params[d.name])
                             for d in self.dims], dtype=np.float64)
        except KeyError as exc:
            raise ConfigError(f"trial parameters lack the search coordinate {exc.args[0]!r}") from None

    def config(self, params: Mapping[str, Any]) -> RandomnessConfig:
        """The config of stored trial parameters (not clipped: see :meth:`decode`)."""
        return self.decode(self.coordinates(params), clip=False)

    def suggest(self, trial: optuna.Trial) -> RandomnessConfig:
        """Define-by-run: ask ``trial`` for every coordinate and decode."""
        params = {}
        for d in self.dims:
            if d.kind == "categorical":
                params[d.name] = trial.suggest_categorical(d.name, d.choices)
            else:
                params[d.name] = trial.suggest_float(d.name, d.low, d.high)
        return self.config(params)

    # -- sampling ----------------------------------------------------------------------------------
    def sample_sparse(self, rng: np.random.Generator, k: int | None) -> np.ndarray:
        """A starting position: always-searched coordinates uniform; ``k`` optional techniques on (random
        strength), the others off (the reference "sparse start"). ``k=None``: every coordinate uniform."""
        u = rng.uniform(self.low, self.high)
        if k is None:
            return u
        optional = np.flatnonzero(self.optional)
        k = min(int(k), len(optional))
        on = set(rng.choice(optional, size=k, replace=False).tolist()) if k else set()
        for j in optional:
            d = self.dims[j]
            u[j] = d.sample_on(rng) if j in on else d.off_coordinate()
        return u

    # -- analysis ----------------------------------------------------------------------------------
    def strengths(self, config: RandomnessConfig) -> dict[str, float | str]:
        """What analysis correlates: the physical value of numeric knobs, 1/0 for on/off techniques, the
        category for the optimizer. Unset always-searched knobs (inherit the task's value) give NaN."""
        if self.preset == "paper":
            return paper_strengths(dict(zip(PAPER_COLUMNS, self.encode(config), strict=True)))
        return self.strengths_of(self.encode_loose(config))

    def encode_loose(self, config: RandomnessConfig) -> np.ndarray:
        """Like :meth:`encode`, but an unset knob without off value gives NaN instead of an error."""
        out = []
        for d in self.dims:
            table = config.table(d.technique)
            value = table[technique(d.technique).main().name] if table is not None else d.off
            out.append(math.nan if value is None else d.coordinate(value))
        return np.array(out, dtype=np.float64)

    def strengths_of(self, u: Sequence[float] | np.ndarray) -> dict[str, float | str]:
        """Strengths of a position (see :meth:`strengths`)."""
        if self.preset == "paper":
            return paper_strengths(dict(zip(PAPER_COLUMNS, self.clip(u), strict=True)))
        out: dict[str, float | str] = {}
        for d, x in zip(self.dims, u, strict=True):
            if math.isnan(x):
                out[d.technique] = math.nan
                continue
            value = d.value(x)
            if d.kind == "categorical":
                if d.off is None:
                    out[d.technique] = value                       # the optimizer: a category
                else:
                    out[d.technique] = float(value != d.off)       # on/off
            else:
                out[d.technique] = float(value)
        return out
