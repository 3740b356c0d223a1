"""The ``dicelab theory`` command group: listing, usage errors (exit 2), help examples."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dicelab.cli import app, main


def test_list_and_help():
    r = CliRunner().invoke(app, ["theory", "list", "--json"])
    assert r.exit_code == 0 and '"E6"' in r.output
    r = CliRunner().invoke(app, ["theory", "run", "--help"])
    assert r.exit_code == 0 and "dicelab theory run E1 --quick" in r.output


@pytest.mark.parametrize("argv,needle", [
    (["theory", "run", "E9"], "unknown experiment"),
    (["theory", "run", "E1", "--alphas", "0.04,x"], "--alphas"),
    (["theory", "run", "E1", "--alphas", "0.04"], "--alphas"),
    (["theory", "run", "E1", "--quick", "--full"], "exclusive"),
    (["theory", "run", "E1", "--chains", "0"], "--chains"),
])
def test_usage_errors_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as ex:
        main(argv)
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
