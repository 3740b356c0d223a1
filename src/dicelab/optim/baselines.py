"""The optimizers the R-SGD benchmark compares, by name, and R-SGD's deterministic mean field.

In expectation R-SGD is SGD with a momentum that rises like its reinforcement probability,
β_t = Γ(t) = 1 − gamma0·gamma**t. :class:`MomentumSchedule` gives ``torch.optim.SGD`` exactly that
momentum, so the benchmark can tell the effect of the *random* resetting from the effect of the rising
momentum alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from dicelab.errors import ConfigError
from dicelab.optim.registry import build_optimizer
from dicelab.optim.rsgd import ReinforcedSGD

__all__ = ["MomentumSchedule", "build", "BENCH_OPTIMIZERS"]

# name -> what the benchmark table says about it
BENCH_OPTIMIZERS: dict[str, str] = {
    "sgd": "torch SGD",
    "sgd_momentum": "SGD, momentum 0.9",
    "sgd_momentum_schedule": "SGD, momentum min(0.99, 1 - 0.999^t) (R-SGD's mean field)",
    "nesterov": "SGD, Nesterov momentum 0.9",
    "adam": "Adam (betas 0.9/0.999, eps 1e-8)",
    "rsgd": "Reinforced SGD (defaults of spec 05 §3)",
}


class MomentumSchedule:
    """Before each ``optimizer.step()``, :meth:`step` sets every group's momentum to
    ``min(beta_max, 1 − gamma0·gamma**t)`` (t = completed steps).

    ``torch.optim.SGD`` creates its momentum buffer on first use, so the optimizer may start with
    momentum 0 (the default schedule's value at t = 0). :func:`build` registers this as a step pre-hook.
    """

    def __init__(self, optimizer: torch.optim.SGD, gamma: float = 0.999, gamma0: float = 1.0,
                 beta_max: float = 0.99) -> None:
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma: must be in (0, 1] (got {gamma!r})")
        if not 0.0 <= gamma0 <= 1.0:
            raise ValueError(f"gamma0: must be in [0, 1] (got {gamma0!r})")
        if not 0.0 <= beta_max <= 1.0:
            raise ValueError(f"beta_max: must be in [0, 1] (got {beta_max!r})")
        self.optimizer = optimizer
        self.gamma, self.gamma0, self.beta_max = gamma, gamma0, beta_max
        self.t = 0

    def momentum(self, t: int | None = None) -> float:
        """β at step ``t`` (default: the coming step)."""
        t = self.t if t is None else t
        return min(self.beta_max, 1.0 - self.gamma0 * self.gamma**t)

    def step(self) -> None:
        beta = self.momentum()
        for group in self.optimizer.param_groups:
            group["momentum"] = beta
        self.t += 1

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])


def build(name: str, params: Iterable, *, lr: float, weight_decay: float = 0.0, seed: int | None = None,
          **options: Any) -> torch.optim.Optimizer:
    """Build benchmark optimizer ``name`` (one of :data:`BENCH_OPTIMIZERS`) at learning rate ``lr``.

    ``options`` go to the optimizer (``rsgd``: any :class:`ReinforcedSGD` option; ``sgd_momentum_schedule``:
    ``gamma, gamma0, beta_max``); ``seed`` seeds R-SGD's draws and is ignored by the others. The schedule
    optimizer carries its :class:`MomentumSchedule` as ``optimizer.momentum_schedule``.
    """
    if name == "rsgd":
        return ReinforcedSGD(params, lr=lr, weight_decay=weight_decay, seed=seed, **options)
    if name == "sgd_momentum_schedule":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=weight_decay)
        schedule = MomentumSchedule(opt, **options)
        opt.register_step_pre_hook(lambda *_: schedule.step())
        opt.momentum_schedule = schedule  # type: ignore[attr-defined]
        return opt
    registry_name = {"sgd": "sgd", "sgd_momentum": "momentum", "nesterov": "nesterov", "adam": "adam"}.get(name)
    if registry_name is None:
        raise ConfigError(f"optimizer: unknown benchmark optimizer {name!r} (known: {', '.join(BENCH_OPTIMIZERS)})")
    momentum = options.pop("momentum", 0.9) if registry_name in ("momentum", "nesterov") else None
    return build_optimizer(registry_name, params, lr=lr, momentum=momentum, weight_decay=weight_decay, **options)
