"""Helpers of the memorization tests (imported by name): the spec's digits-mlp (spec 04 §13) at reduced epochs."""

from __future__ import annotations

from dicelab.config import load_run_config


def digits_mlp(epochs: int = 3, seed: int = 0, memorization: dict | None = None, **sections):
    """spec 04's digits-mlp: 64-256-256-256-10, all 1,000 training images, SGD 0.05 momentum 0.9, batch 32."""
    data = {
        "name": "digits-mlp", "seed": seed,
        "data": {"name": "digits", "val_fraction": 0.0, "standardize": True},
        "model": {"name": "mlp", "widths": [256, 256, 256]},
        "train": {"epochs": epochs, "batch_size": 32, "optimizer": "momentum", "lr": 0.05, "progress": False,
                  "threads": 1},
        "output": {"checkpoint": False},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    if memorization is not None:
        data["memorization"] = memorization
    return load_run_config(data=data)


def small_mlp(epochs: int = 2, seed: int = 0, memorization: dict | None = None, **sections):
    """A digits MLP 64-32-10 that trains in a fraction of a second (for plumbing tests)."""
    cfg = digits_mlp(epochs, seed, memorization, **sections)
    data = cfg.model_dump()
    data["model"]["widths"] = [32]
    return load_run_config(data=data)
