"""Training engine: :class:`Trainer`, hook points, run records and checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicelab.config import RunConfig
from dicelab.hooks import HOOK_POINTS, EpochPlan, Hook, HookList, StepState
from dicelab.train.checkpoint import load_checkpoint, save_checkpoint
from dicelab.train.engine import Trainer, build_model_for, evaluate, load_data_for, resolve_device

__all__ = ["Trainer", "Hook", "HookList", "StepState", "EpochPlan", "HOOK_POINTS", "evaluate", "train_from_config",
           "load_checkpoint", "save_checkpoint", "resolve_device", "load_data_for", "build_model_for"]


def train_from_config(config: RunConfig, *, out_dir: str | Path | None = None, quiet: bool = False,
                      hooks=(), resume_from: str | Path | None = None) -> dict[str, Any]:
    """Build everything a run config describes, train, and return the run record (with its ``path``)."""
    trainer = Trainer(config, hooks, quiet=quiet)
    return trainer.fit(out_dir=out_dir, resume_from=resume_from)
