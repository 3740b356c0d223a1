"""Learning-rate schedules as pure functions of the epoch (applied at the start of each epoch).

Pure functions keep a resumed run exact (nothing to checkpoint) and leave ``on_epoch`` hooks free to
change the rate when the schedule is constant.
"""

from __future__ import annotations

import math

from dicelab.config import TrainConfig

__all__ = ["lr_at_epoch"]


def lr_at_epoch(train: TrainConfig, epoch: int) -> float:
    """The learning rate of 0-based ``epoch`` under ``train.scheduler``."""
    base = train.lr
    if train.scheduler == "constant":
        return base
    if train.scheduler == "step":
        return base * train.gamma ** (epoch // train.step_size)
    if train.scheduler == "exponential":
        return base * train.gamma**epoch
    if train.scheduler == "cosine":  # from base at epoch 0 down to 0 after the last epoch
        return 0.5 * base * (1.0 + math.cos(math.pi * epoch / train.epochs))
    raise ValueError(f"train.scheduler: unknown schedule {train.scheduler!r}")
