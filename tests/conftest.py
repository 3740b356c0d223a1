"""Shared fixtures: a CLI runner that calls the entry point in-process."""

from __future__ import annotations

import pytest

from dicelab.cli import main


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
