"""The ``dicelab`` command line: a thin typer layer over the public Python API.

Each sub-command group lives beside the subpackage it drives (``dicelab/<sub>/cli.py``) and is
registered here; this module holds no logic of its own beyond turning :class:`DicelabError`
into a one-line message and an exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dicelab import __version__
from dicelab.errors import DicelabError

app = typer.Typer(
    name="dicelab",
    help="Inject, search, measure and explain randomness in deep-network training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    epilog=(
        "Examples:\n\n"
        "  dicelab datasets\n\n"
        "  dicelab train examples/digits_mlp.toml --set train.lr=0.05\n\n"
        "  dicelab train examples/mnist_vgg.toml --data-dir ~/data --download"
    ),
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dicelab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Inject, search, measure and explain randomness in deep-network training."""


@app.command(
    epilog=(
        "Examples:\n\n"
        "  dicelab train examples/digits_mlp.toml\n\n"
        "  dicelab train examples/digits_mlp.toml --set train.lr=0.05 --set seed=3\n\n"
        "  dicelab train examples/mnist1d_mlp.toml --out runs/mnist1d --quiet\n\n"
        "  dicelab train examples/mnist_vgg.toml --data-dir ~/data --download\n\n"
        "  dicelab train examples/digits_mlp.toml --resume runs/digits-mlp-s0-20261202-101500/checkpoint.pt"
    )
)
def train(
    config: Annotated[Path, typer.Argument(help="Run config (TOML).")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config field: section.key=value (repeatable)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the run record (default: output.dir).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where real datasets live (sets data.data_dir).")] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Fetch a missing real dataset into --data-dir (needs network).")
    ] = False,
    resume: Annotated[Path | None, typer.Option(help="Continue from a checkpoint.pt of an earlier run.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train one model as a run config says; write a JSON run record and print its path."""
    from dicelab.config import load_run_config
    from dicelab.train import train_from_config

    overrides = list(set_ or [])
    if data_dir is not None:
        overrides.append(f"data.data_dir={str(data_dir)!r}")
    if download:
        overrides.append("data.download=true")
    cfg = load_run_config(config, overrides=overrides)
    record = train_from_config(cfg, out_dir=out, quiet=quiet, resume_from=resume)
    final = record["final"]
    typer.echo(f"status: {record['status']}" + (f" ({record['reason']})" if record.get("reason") else ""))
    if final.get("test_accuracy") is not None:
        typer.echo(f"test accuracy: {final['test_accuracy']:.4f}")
    typer.echo(f"run record: {record['path']}")


@app.command(epilog="Examples:\n\n  dicelab datasets\n\n  dicelab datasets --data-dir ~/data --json")
def datasets(
    data_dir: Annotated[Path | None, typer.Option(help="Where real datasets are looked for.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the datasets: input shape, classes, sizes, and whether they are available offline."""
    import json

    from rich.console import Console
    from rich.table import Table

    from dicelab.data import describe_datasets

    rows = describe_datasets(data_dir)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="dicelab datasets")
    for col in ("name", "kind", "input shape", "classes", "train/test", "offline", "available here"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(
            r["name"],
            r["kind"],
            "x".join(str(s) for s in r["input_shape"]),
            str(r["num_classes"]),
            f"{r['train_size']}/{r['test_size']}",
            "yes" if r["offline"] else "no",
            "yes" if r["available"] else "no",
        )
    # Off a terminal rich assumes 80 columns and would truncate names; a pipe gets the full table.
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    typer.echo("Real datasets are read from --data-dir (default ./data); fetch them once with "
               "`dicelab train ... --set data.download=true`.")


from dicelab.randomness.cli import EPILOG as _TECHNIQUES_EPILOG  # noqa: E402
from dicelab.randomness.cli import techniques_command  # noqa: E402

app.command("techniques", epilog=_TECHNIQUES_EPILOG)(techniques_command)


# --- sub-command groups, one per subpackage -------------------------------------------------
# (each module defines `app = typer.Typer(...)`; keep this list sorted)
_SUBCOMMANDS: list[tuple[str, str]] = [("bench", "dicelab.optim.cli"),
                                       ("memorization", "dicelab.memorization.cli"),
                                       ("study", "dicelab.study.cli"),
                                       ("symmetry", "dicelab.symmetry.cli"),
                                       ("theory", "dicelab.theory.cli")]

for _name, _module in _SUBCOMMANDS:
    import importlib

    app.add_typer(importlib.import_module(_module).app, name=_name)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn DicelabError into ``error: ...`` and its exit code."""
    try:
        app(args=argv, prog_name="dicelab", standalone_mode=False)
    except DicelabError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted: records and checkpoints written so far are kept", err=True)
        sys.exit(130)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:
        # Usage errors (unknown option, missing argument) arrive here in non-standalone mode as click
        # exceptions; recent typer versions vendor click, so they are recognised by their interface.
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
