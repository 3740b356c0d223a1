"""``dicelab theory``: list and run the calibrated singular-limit experiments (thin layer over the library)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dicelab.errors import ConfigError

app = typer.Typer(
    help="Noisy gradient descent near a zero-loss manifold: implicit regulariser, limit flow/SDE, time scales.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.command("list", epilog="Examples:\n\n  dicelab theory list\n\n  dicelab theory list --json")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List the experiments: id, what it shows, noise, regime, expected alpha-exponent, fast runtime."""
    from dicelab.theory.experiments import EXPERIMENTS

    rows = [{"id": e.id, "title": e.title, "noise": e.noise, "regime": e.regime, "alpha_exponent": e.exponent,
             "fast_runtime": e.fast_runtime} for e in sorted(EXPERIMENTS, key=lambda e: e.id)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    import sys

    from rich.console import Console
    from rich.table import Table

    t = Table(title="dicelab theory experiments")
    for col in ("id", "what it shows", "noise", "regime", "alpha exponent", "fast runtime"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["id"], r["title"], r["noise"], r["regime"], r["alpha_exponent"], r["fast_runtime"])
    Console(width=None if sys.stdout.isatty() else 160).print(t)  # a pipe gets the full-width table


def _parse_alphas(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--alphas must be comma-separated numbers, got {text!r}") from None
    if len(vals) < 2 or any(not (0 < v < 1) for v in vals):
        raise ConfigError(f"--alphas needs at least two step sizes in (0, 1), got {text!r}")
    return vals


@app.command(
    "run",
    epilog=(
        "Examples:\n\n"
        "  dicelab theory run E1 --quick\n\n"
        "  dicelab theory run E1 E2 E3 --seed 1 --out runs/theory\n\n"
        "  dicelab theory run all --no-plots --json\n\n"
        "  dicelab theory run E2 --full --alphas 0.02,0.01,0.005"
    ),
)
def run(
    ids: Annotated[list[str], typer.Argument(help="Experiment ids (E1 ... E6) or 'all'.")],
    quick: Annotated[bool, typer.Option("--quick", help="Fast setting (the default; what the tests run).")] = False,
    full: Annotated[bool, typer.Option("--full", help="Full calibration setting (minutes).")] = False,
    seed: Annotated[int, typer.Option(help="Root seed.")] = 0,
    chains: Annotated[int | None, typer.Option(help="Number of chains (seeds) simulated at once.")] = None,
    alphas: Annotated[str | None, typer.Option(help="Alpha sweep, comma-separated, e.g. 0.04,0.02,0.01.")] = None,
    out: Annotated[Path, typer.Option(help="Output root; each run goes to OUT/<id>/NNN/.")] = Path("runs/theory"),
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG figures.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary line per experiment.")] = False,
) -> None:
    """Run experiments; print measured vs predicted (checks table); write result.json and PNGs.

    Exit code 0 if every check passes, 1 if one fails, 2 on usage errors.
    """
    from dicelab.theory.experiments import EXPERIMENTS, run_experiment

    if quick and full:
        raise ConfigError("--quick and --full are exclusive")
    if chains is not None and chains < 1:
        raise ConfigError(f"--chains must be >= 1, got {chains}")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")
    sweep = _parse_alphas(alphas)
    keys = sorted(EXPERIMENTS.names()) if [i.lower() for i in ids] == ["all"] else [i.upper() for i in ids]
    for k in keys:  # every name checked before the first experiment runs
        EXPERIMENTS.get(k)
    from rich.console import Console
    from rich.table import Table

    console = Console(quiet=as_json)
    ok = True
    results = []
    for k in keys:
        res = run_experiment(k, mode="full" if full else "fast", seed=seed, out=out / k, plots=not no_plots,
                             chains=chains, sweep_alphas=sweep)
        ok &= res.passed
        results.append(res.to_json() | {"files": res.files})
        if not quiet:
            t = Table(title=f"{k} ({res.mode}, seed {seed}) — {res.runtime_s:.1f} s")
            for col in ("check", "measured", "threshold / prediction", "pass"):
                t.add_column(col)
            for c in res.checks:
                t.add_row(c.name, f"{c.measured:.5g}", c.threshold, "[green]yes[/]" if c.passed else "[red]NO[/]")
            console.print(t)
        console.print(f"{k}: {'PASS' if res.passed else 'FAIL'} ({sum(c.passed for c in res.checks)}/"
                      f"{len(res.checks)} checks) -> {Path(res.files[-1]).parent if res.files else '-'}")
    if as_json:
        typer.echo(json.dumps(results, indent=1))
    if not ok:
        raise typer.Exit(1)


@app.command("plot", epilog="Examples:\n\n  dicelab theory plot runs/theory/E1/001")
def plot(run_dir: Annotated[Path, typer.Argument(help="A run folder holding result.json.")]) -> None:
    """Re-render the figures of a finished run from its result.json."""
    from dicelab.theory.experiments import load_result
    from dicelab.theory.plots import render_all

    res = load_result(run_dir)
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    for p in render_all(res.get("series", []), folder):
        typer.echo(str(p))
