"""Shared fixtures: tiny run configs and a CLI runner that calls the entry point in-process."""

from __future__ import annotations

import pytest

from dicelab.cli import main
from dicelab.config import RunConfig, load_run_config


@pytest.fixture
def run_cli(capsys):
    """Run ``dicelab ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def _run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def small_digits_config(**overrides) -> RunConfig:
    """A digits MLP that trains in about a second."""
    data = {
        "name": "digits-small",
        "seed": 0,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "widths": [32]},
        "train": {"epochs": 3, "batch_size": 64, "optimizer": "momentum", "lr": 0.05, "progress": False, "threads": 1},
        "output": {"checkpoint": False},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[section] = value
    return load_run_config(data=data)


@pytest.fixture
def small_config():
    return small_digits_config
