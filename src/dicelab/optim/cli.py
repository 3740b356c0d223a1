"""``dicelab bench``: benchmarks that print measured numbers side by side (thin layer over the library)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dicelab.errors import ConfigError

app = typer.Typer(help="Benchmarks: measured numbers, printed side by side.", no_args_is_help=True,
                  rich_markup_mode="rich")


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str | None) -> list[int] | None:
    """``5`` means seeds 0..4; ``0,3,7`` (or ``7,``) lists them."""
    if text is None:
        return None
    try:
        if "," not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return list(range(n))
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected a count N >= 1 or a list like 0,1,2 (got {text!r})") from None


def _pairs(flag: str, items: list[str] | None) -> dict[str, Any]:
    """``a=1,b=x`` (repeatable) → {"a": 1, "b": "x"}; values are TOML literals, anything else a string."""
    from dicelab.config import parse_override

    out: dict[str, Any] = {}
    for item in items or []:
        for part in (p for p in item.split(",") if p.strip()):
            if "=" not in part:
                raise ConfigError(f"{flag}: expected key=value, got {part!r}")
            path, value = parse_override(part)
            out[".".join(path)] = value
    return out


@app.command(
    "optimizers",
    epilog=(
        "Examples:\n\n"
        "  dicelab bench optimizers --quick\n\n"
        "  dicelab bench optimizers --tasks teacher-student --seeds 5 --out runs/bench-ts\n\n"
        "  dicelab bench optimizers --lr 0.05 --rsgd gamma=0.999,max_prob=0.99 --lr-override sgd_momentum=0.005\n\n"
        "  dicelab bench optimizers --optimizers sgd,rsgd,adam --epochs 50 --strict"
    ),
)
def optimizers(
    quick: Annotated[bool, typer.Option("--quick", help="Smoke run: 2 seeds, 20 epochs, 10 timing rounds.")] = False,
    tasks: Annotated[str | None, typer.Option(help="Comma list of tasks: teacher-student,digits,mnist1d.")] = None,
    optimizers_: Annotated[str | None, typer.Option(
        "--optimizers", help="Comma list: sgd,sgd_momentum,sgd_momentum_schedule,nesterov,adam,rsgd.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seed count N (0..N-1) or list 0,1,2 (default 5; quick 2).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per run (default 100; quick 20).")] = None,
    lr: Annotated[float, typer.Option(help="Learning rate of every optimizer but Adam (1e-3).")] = 0.02,
    lr_override: Annotated[list[str] | None, typer.Option(
        "--lr-override", help="NAME=LR for one optimizer (repeatable or comma list).")] = None,
    rsgd: Annotated[list[str] | None, typer.Option(
        help="R-SGD options, e.g. gamma=0.999,max_prob=0.99,granularity=\"tensor\".")] = None,
    threads: Annotated[int, typer.Option(help="Intra-op threads (1 gives stable timings).")] = 1,
    timing_rounds: Annotated[int | None, typer.Option(help="Interleaved timing rounds (default 30; quick 10; 0 skips).")]
    = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: a new runs/bench-optimizers-... folder).")]
    = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG figures.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 if an evaluated target is NOT MET.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the targets and per-run metrics as JSON.")] = False,
) -> None:
    """Compare R-SGD with SGD, momentum, its mean-field momentum schedule, Nesterov and Adam.

    Prints a table per task (steps to SGD's final training error, final/min test error, gap, state
    memory, time ratios) and the spec's targets with MET / NOT MET; writes bench_optimizers.json/.csv and
    PNGs (curves_<task>, gap_<task>, gamma_<task>, cost). Exit code 0 unless --strict and a target fails.
    """
    from dicelab.optim.bench import default_out_dir, print_report, run

    if threads < 1:
        raise ConfigError(f"--threads: must be >= 1 (got {threads})")
    seed_list = _seeds(seeds)
    lr_map = _pairs("--lr-override", lr_override)
    out_dir = out if out is not None else default_out_dir()
    result = run(tasks=_names(tasks), optimizers=_names(optimizers_), seeds=seed_list, epochs=epochs, lr=lr,
                 lr_override=lr_map, rsgd=_pairs("--rsgd", rsgd), threads=threads, quick=quick,
                 timing_rounds=timing_rounds, out=out_dir, plots=not no_plots, progress=not as_json)
    if as_json:
        payload = result.to_json()
        payload.pop("runs")
        typer.echo(json.dumps(payload, indent=1, default=str))
    else:
        print_report(result)
        typer.echo(f"results: {out_dir} ({result.runtime_s:.0f} s)")
    if strict and any(t.met is False for t in result.targets):
        raise typer.Exit(1)
