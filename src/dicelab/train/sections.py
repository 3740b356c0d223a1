"""Hooks that a run config's own sections ask for (``[randomness]``, ``[memorization]``).

Each subpackage that plugs into training through a config table contributes one builder here, so the
engine knows about config sections only through this one function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dicelab.hooks import Hook
from dicelab.seeding import SeedBank

if TYPE_CHECKING:
    from dicelab.config import RunConfig
    from dicelab.data import DataBundle

__all__ = ["hooks_from_config"]


def hooks_from_config(config: RunConfig, seeds: SeedBank, device: torch.device, data: DataBundle) -> list[Hook]:
    """The hooks ``config``'s sections switch on, in the order the engine should call them.

    ``data`` is the loaded dataset (already on ``device``): a section may check it fits (e.g. image
    augmentation needs (N, C, H, W) inputs) before anything is trained or written."""
    hooks: list[Hook] = []
    if config.randomness.active():
        from dicelab.randomness import build

        hooks.append(build(config.randomness, seeds, device, num_classes=data.num_classes,
                           input_shape=data.input_shape, num_train=len(data.train)))
    if config.memorization is not None:
        from dicelab.memorization.hook import MemorizationHook

        hooks.append(MemorizationHook(config.memorization, seeds, device, run_config=config, data=data))
    if config.train.optimizer == "rsgd":  # R-SGD: seed from the run, epoch clock, per-epoch log
        from dicelab.optim.training import optimizer_hooks

        hooks.extend(optimizer_hooks(config, seeds))
    return hooks
