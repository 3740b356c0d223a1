"""R-SGD inside the training engine: its seed from the run, its epoch clock, its per-epoch log.

The engine builds optimizers by name from ``train.optimizer_options``; it has no seed to give them. This
hook (switched on by ``train.optimizer = "rsgd"`` through :func:`dicelab.train.sections.hooks_from_config`)
fills in ``seed``, so that R-SGD draws from the run's ``"optim.reinforce"`` stream, tells the optimizer the
epoch (``time_unit = "epoch"``), and adds Γ, the reset fraction and ‖buf‖ to every epoch's metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dicelab.hooks import EpochPlan, Hook, StepState
from dicelab.optim.rsgd import SOURCE, ReinforcedSGD
from dicelab.seeding import SeedBank

if TYPE_CHECKING:
    from dicelab.config import RunConfig, TrainConfig

__all__ = ["ReinforceHook", "optimizer_hooks"]


class ReinforceHook(Hook):
    """Seeds :class:`ReinforcedSGD` from the run and logs ``rsgd_prob``, ``rsgd_reset_fraction`` and
    ``rsgd_buf_norm`` once per epoch (after the epoch's last step)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.optimizer: ReinforcedSGD | None = None

    def configure(self, train: TrainConfig) -> TrainConfig:
        if train.optimizer != "rsgd" or "seed" in train.optimizer_options:
            return train  # an explicit seed in the config wins
        return train.model_copy(update={"optimizer_options": {**train.optimizer_options, "seed": self.seed}})

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer if isinstance(optimizer, ReinforcedSGD) else None

    def on_epoch(self, state: StepState, plan: EpochPlan) -> None:
        if self.optimizer is not None:
            self.optimizer.set_epoch(state.epoch)

    def on_epoch_end(self, state: StepState, metrics: dict[str, Any]) -> None:
        opt = self.optimizer
        if opt is not None:
            metrics.update(rsgd_prob=opt.reinforce_prob(), rsgd_reset_fraction=opt.last_reset_fraction,
                           rsgd_buf_norm=opt.buffer_norm())


def optimizer_hooks(config: RunConfig, seeds: SeedBank) -> list[Hook]:
    """The hooks ``config.train.optimizer`` needs (R-SGD: :class:`ReinforceHook`)."""
    if config.train.optimizer != "rsgd":
        return []
    seeds.seed(SOURCE)  # record the stream in the run record's "seeds"
    # ReinforcedSGD(seed=s) draws from derive_seed(s, SOURCE), which is what SeedBank.seed(SOURCE) gives
    # for the root seed or for an override of this source.
    return [ReinforceHook(int(seeds.overrides.get(SOURCE, seeds.root_seed)))]
