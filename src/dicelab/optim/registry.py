"""Optimizers by name. Built-ins wrap ``torch.optim``; other optimizers (e.g. R-SGD) register here so that
``optimizer = "<name>"`` works in any run or study config."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from dicelab.errors import ConfigError
from dicelab.optim.rsgd import rsgd_factory
from dicelab.registry import Registry

__all__ = ["OPTIMIZERS", "register_optimizer", "optimizer_names", "build_optimizer"]

# factory(params, lr, momentum, weight_decay, **options) -> Optimizer
OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer", "train.optimizer")


def register_optimizer(name: str, factory: OptimizerFactory) -> None:
    OPTIMIZERS.register(name, factory)


def optimizer_names() -> list[str]:
    return OPTIMIZERS.names()


def build_optimizer(name: str, params: Iterable, *, lr: float, momentum: float | None = None,
                    weight_decay: float = 0.0, **options: Any) -> torch.optim.Optimizer:
    """Build optimizer ``name``. ``momentum=None`` means the optimizer's own default."""
    factory = OPTIMIZERS.get(name)
    try:
        return factory(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **options)
    except TypeError as exc:
        raise ConfigError(f"train.optimizer_options: {exc}") from None


def _sgd(params, *, lr, momentum, weight_decay, **kw):
    return torch.optim.SGD(params, lr=lr, momentum=momentum or 0.0, weight_decay=weight_decay, **kw)


def _momentum(params, *, lr, momentum, weight_decay, **kw):
    return torch.optim.SGD(params, lr=lr, momentum=0.9 if momentum is None else momentum,
                           weight_decay=weight_decay, **kw)


def _nesterov(params, *, lr, momentum, weight_decay, **kw):
    return torch.optim.SGD(params, lr=lr, momentum=0.9 if momentum is None else momentum, nesterov=True,
                           weight_decay=weight_decay, **kw)


def _no_momentum(name: str) -> None:
    raise ConfigError(f"train.momentum: {name} has no momentum; use optimizer_options.betas instead")


def _adam(params, *, lr, momentum, weight_decay, **kw):
    if momentum is not None:
        _no_momentum("adam")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **kw)


def _adamw(params, *, lr, momentum, weight_decay, **kw):
    if momentum is not None:
        _no_momentum("adamw")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kw)


for _name, _factory in (("sgd", _sgd), ("momentum", _momentum), ("nesterov", _nesterov), ("adam", _adam),
                        ("adamw", _adamw)):
    register_optimizer(_name, _factory)

# Reinforced SGD (spec 05); its options come from train.optimizer_options (schedule, gamma, prob, ...)
register_optimizer("rsgd", rsgd_factory)
