"""Optimizers: a name registry over ``torch.optim`` and dicelab's own optimizers.

``ReinforcedSGD`` (R-SGD, spec 05) is registered as ``optimizer = "rsgd"``; :mod:`dicelab.optim.baselines`
holds the optimizers its benchmark compares and :mod:`dicelab.optim.bench` the benchmark itself.
"""

from dicelab.optim.baselines import BENCH_OPTIMIZERS, MomentumSchedule, build
from dicelab.optim.registry import build_optimizer, optimizer_names, register_optimizer
from dicelab.optim.rsgd import ReinforcedSGD, gamma_for

__all__ = ["build_optimizer", "optimizer_names", "register_optimizer", "ReinforcedSGD", "gamma_for",
           "MomentumSchedule", "build", "BENCH_OPTIMIZERS"]
