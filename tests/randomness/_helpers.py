"""Small shared pieces of the randomness tests: a technique set on fake data, training runs on digits."""

from __future__ import annotations

import torch

from dicelab.hooks import StepState
from dicelab.randomness import RandomnessConfig, build
from dicelab.train import Trainer
from tests._support import small_digits_config

# The spec's default test setup: digits MLP 64-128-128-10, batch 128, 2 epochs, one thread, plain order.
BASE = {"model": {"widths": [128, 128]}, "train": {"batch_size": 128, "epochs": 2, "shuffle": False}}


def state(step: int = 0, epoch: int = 0, epochs: int = 1) -> StepState:
    return StepState(epoch=epoch, epochs=epochs, step=step, batch_size=128, lr=0.1)


def tset(seed: int = 0, trace: bool = True, model: torch.nn.Module | None = None, **table):
    """A technique set for ``table`` (and, given a model, already wrapped around it)."""
    s = build(RandomnessConfig(**table), seed, trace=trace, num_classes=10, input_shape=(1, 8, 8), num_train=1000)
    if model is not None:
        s.wrap_model(model)
    return s


def train(randomness=None, epochs: int = 2, **sections):
    """Train the default setup with a ``[randomness]`` table; returns (record, trainer)."""
    merged = {k: dict(v) for k, v in BASE.items()}
    for key, value in sections.items():
        merged.setdefault(key, {}).update(value)
    merged["train"]["epochs"] = epochs
    cfg = small_digits_config(**merged, randomness=randomness or {})
    trainer = Trainer(cfg, quiet=True)
    return trainer.fit(write=False), trainer


def final_state(trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.hooks.unwrap(trainer.model).state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metrics(record) -> list[dict]:
    keep = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "batch_size", "steps")
    return [{k: e[k] for k in keep} for e in record["epochs"]]
