"""Shared helpers of the benchmarks/symmetry_*.py scripts: the spec-06 datasets and one training call."""

from __future__ import annotations

from typing import Any

import torch

from dicelab.config import load_run_config
from dicelab.data import load_dataset
from dicelab.train import Trainer

DIGITS = {"name": "digits", "val_fraction": 0.0, "options": {"train_size": 1437}}
# "teacher": X ~ N(0, I_20), labels argmax of a fixed random tanh 20-64-10 teacher, seed 0
TEACHER = {"name": "teacher", "val_fraction": 0.0,
           "options": {"n_train": 2000, "n_test": 2000, "dim": 20, "hidden": 64, "classes": 10, "teacher_seed": 0,
                       "data_seed": 0}}
_DATA: dict[str, Any] = {}


def data(spec: dict) -> Any:
    key = spec["name"]
    if key not in _DATA:
        _DATA[key] = load_dataset(spec["name"], val_fraction=spec["val_fraction"], **spec["options"])
    return _DATA[key]


def train(seed: int, data_spec: dict, model: dict, *, epochs: int = 15, optimizer: str = "sgd", lr: float = 0.1,
          batch_size: int = 64) -> tuple[torch.nn.Module, dict]:
    """Train one model with the dicelab engine (one thread, no files); returns (model in eval mode, record)."""
    cfg = load_run_config(data={
        "name": "bench", "seed": seed, "data": data_spec, "model": model,
        "train": {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr, "progress": False,
                  "threads": 1},
        "output": {"checkpoint": False}})
    trainer = Trainer(cfg, data=data(data_spec), quiet=True)
    record = trainer.fit(write=False)
    return trainer.model.eval(), record
