"""Helpers shared by the tests (imported by name; fixtures live in conftest.py)."""

from __future__ import annotations

from dicelab.config import RunConfig, load_run_config


def small_digits_config(**overrides) -> RunConfig:
    """A digits MLP (64-32-10, one thread) that trains in about a second; keyword sections merge in."""
    data = {
        "name": "digits-small",
        "seed": 0,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "widths": [32]},
        "train": {"epochs": 3, "batch_size": 64, "optimizer": "momentum", "lr": 0.05, "progress": False, "threads": 1},
        "output": {"checkpoint": False},
    }
    for key, value in overrides.items():  # a dict merges into its section, anything else replaces
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return load_run_config(data=data)
