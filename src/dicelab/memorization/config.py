"""The ``[memorization]`` table of a run config (spec 04 §9).

This module imports only pydantic and :mod:`dicelab.strict`: :mod:`dicelab.config` imports it to declare
``RunConfig.memorization``, so it must stay free of torch and of the run config itself.

.. code-block:: toml

    [memorization]
    num_labels = 100        # n, the random-label values (alias: n)
    taps = ["act3"]         # module names; "input:NAME", "output:NAME", or "penultimate"
    lam = 0.0               # or { act3 = 0.1 }
    reg = "complement"      # "uniform" | "grl"
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from dicelab.strict import StrictModel

__all__ = ["MemorizationConfig", "DEFAULT_LAM_GRID", "REG_VARIANTS", "HEAD_KINDS", "POOL_KINDS"]

# The calibrated lambda grid of spec 04 §9 (digits-mlp, SGD lr 0.05 momentum 0.9: stable up to 1).
DEFAULT_LAM_GRID: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0)
REG_VARIANTS = ("complement", "uniform", "grl")
HEAD_KINDS = ("linear", "mlp", "lowrank")
POOL_KINDS = ("auto", "gap", "gmp", "cls", "mean_tokens", "flatten", "none")


def tap_key(tap: str) -> str:
    """The canonical spelling of a tap: ``"NAME"`` and ``"output:NAME"`` are the same tap."""
    return tap.removeprefix("output:")


class MemorizationConfig(StrictModel):
    """Random-label prediction heads on a run: where they read, how many labels, the regulariser.

    Every field has the default of spec 04 §9; only ``taps`` usually needs setting for a foreign model
    (the default ``"penultimate"`` is the input of the model's last ``nn.Linear``).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    num_labels: int = Field(100, ge=2, alias="n")      # n: random-label values, chance = 1/n
    mode: Literal["uniform", "balanced"] = "uniform"
    per_class: bool = False                             # 2024 version: random sub-labels within each class
    num_sets: int = Field(1, ge=1, le=64)              # independent label sets, one head each per tap
    taps: list[str] = Field(default_factory=lambda: ["penultimate"])
    head: Literal["linear", "mlp", "lowrank"] = "linear"
    rank: int = Field(64, ge=1)                         # head = "lowrank": inner rank r
    pool: Literal["auto", "gap", "gmp", "cls", "mean_tokens", "flatten", "none"] = "auto"
    reg: Literal["complement", "uniform", "grl"] = "complement"
    lam: float | dict[str, float] = 0.0                 # one lambda for every tap, or per tap
    lam_warmup_epochs: float = Field(0.0, ge=0.0)       # linear ramp of lambda over this many epochs
    clean_every: int = Field(1, ge=0)                   # clean (eval-mode) accuracy every k epochs; 0: never
    clean_subset: int | None = Field(None, ge=1)        # None: min(m, 10000) training samples
    heldout: bool = True                                # held-out control against a fresh bank
    heldout_split: Literal["auto", "val", "test"] = "auto"   # auto: val if non-empty, else test
    check_bank: bool = False                            # under torch.distributed: all-reduce a bank checksum

    @model_validator(mode="before")
    @classmethod
    def _one_spelling_of_n(cls, data: object) -> object:
        if isinstance(data, dict) and "n" in data and "num_labels" in data:
            raise ValueError("num_labels: given twice (n is its short name); keep one")
        return data

    @field_validator("taps")
    @classmethod
    def _valid_taps(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one module (e.g. [\"penultimate\"])")
        seen: set[str] = set()
        for tap in v:
            kind, _, name = tap.rpartition(":") if ":" in tap else ("output", "", tap)
            if kind not in ("input", "output") or not name.strip():
                raise ValueError(f"{tap!r} is not NAME, output:NAME or input:NAME")
            if tap_key(tap) in seen:
                raise ValueError(f"{tap!r} is listed twice")
            seen.add(tap_key(tap))
        return v

    @field_validator("lam")
    @classmethod
    def _valid_lam(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        values = v.values() if isinstance(v, dict) else [v]
        for x in values:
            if not (x >= 0.0 and x != float("inf")):
                raise ValueError(f"lam must be finite and >= 0, got {x}")
        return v

    @model_validator(mode="after")
    def _lam_keys_are_taps(self) -> MemorizationConfig:
        if isinstance(self.lam, dict):
            known = {tap_key(t) for t in self.taps}
            for key in self.lam:
                if tap_key(key) not in known:
                    raise ValueError(f"lam: key {key!r} is not one of taps {self.taps}")
        return self

    def lam_for(self, tap: str) -> float:
        """The lambda of ``tap`` (0 for a tap that a per-tap table leaves out)."""
        if isinstance(self.lam, dict):
            table = {tap_key(k): x for k, x in self.lam.items()}
            return float(table.get(tap_key(tap), 0.0))
        return float(self.lam)
