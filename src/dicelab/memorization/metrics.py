"""Chance level, its standard error, z-score and the Rademacher-style proxy of an RLP accuracy (spec 04 §6).

An RLP accuracy says how much sample-specific information a head could read from a representation,
*given* the head, n and the optimisation budget; it is always shown with chance and R_proxy beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["chance", "chance_se", "z_score", "r_proxy", "TapStats", "summarize"]


def chance(n: int) -> float:
    """1/n: the accuracy of any head on labels it cannot see."""
    return 1.0 / n


def chance_se(n: int, m: int) -> float:
    """Binomial standard error of an accuracy at chance over m samples: sqrt((1/n)(1 − 1/n)/m)."""
    c = chance(n)
    return math.sqrt(c * (1.0 - c) / m)


def z_score(acc: float, n: int, m: int) -> float:
    """How many chance standard errors ``acc`` lies above 1/n."""
    return (acc - chance(n)) / chance_se(n, m)


def r_proxy(acc: float, n: int) -> float:
    """(acc − 1/n)/(1 − 1/n): 0 at chance, 1 when every random label is fitted (= 2·acc − 1 for n = 2)."""
    c = chance(n)
    return (acc - c) / (1.0 - c)


@dataclass
class TapStats:
    """Online sums of one tap and label set over an epoch's training batches (taken before each
    batch's head update); :meth:`means` turns them into per-sample means."""

    correct: float = 0.0
    count: int = 0
    p_hat: float = 0.0     # sum of p̂_ŷ
    rnd: float = 0.0       # sum of L_rnd
    reg: float = 0.0       # sum of the (unscaled) regulariser value R

    @property
    def online_acc(self) -> float | None:
        return self.correct / self.count if self.count else None

    def means(self) -> dict[str, float | None]:
        if not self.count:
            return {"online_acc": None, "p_hat": None, "rnd": None, "reg": None}
        c = self.count
        return {"online_acc": self.correct / c, "p_hat": self.p_hat / c, "rnd": self.rnd / c, "reg": self.reg / c}


def summarize(acc: float | None, n: int, m: int) -> dict[str, float | None]:
    """``chance``, ``se``, ``z`` and ``r_proxy`` of an accuracy measured on m samples (None-safe)."""
    out: dict[str, float | None] = {"chance": chance(n), "se": chance_se(n, m), "z": None, "r_proxy": None}
    if acc is not None:
        out["z"] = z_score(acc, n, m)
        out["r_proxy"] = r_proxy(acc, n)
    return out
