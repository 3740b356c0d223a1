"""``dicelab memorization``: random-label prediction heads — run, sweep, regularisers, probe, taps, plot.

A thin layer over :mod:`dicelab.memorization.experiments`; every command prints a table and says where
its CSVs and PNGs went.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dicelab.errors import ConfigError

app = typer.Typer(
    help="Random-label prediction heads: how much a network memorizes, and a regulariser against it.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config field: section.key=value.")]
OutOpt = Annotated[Path | None, typer.Option(help="Output folder (default: a new folder under output.dir).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")]
NoPlotsOpt = Annotated[bool, typer.Option("--no-plots", help="Skip the PNG figures.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]


def _console(quiet: bool = False):
    from rich.console import Console

    # Off a terminal rich assumes 80 columns and would truncate; a pipe gets the full table.
    return Console(width=None if sys.stdout.isatty() else 180, quiet=quiet)


def _f(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _floats(text: str, flag: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise ConfigError(f"{flag}: empty list")
    return vals


def _seeds(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not vals or any(v < 0 for v in vals):
        raise ConfigError(f"--seeds: need one or more integers >= 0, got {text!r}")
    return vals


def _load(config: Path, overrides: list[str], require: bool = True):
    from dicelab.config import load_run_config

    cfg = load_run_config(config, overrides=overrides)
    if require and cfg.memorization is None:
        raise ConfigError(f"{config}: no [memorization] table (add one, or use --set memorization.taps=[...])")
    return cfg


@app.command(
    "run",
    epilog=(
        "Examples:\n\n"
        "  dicelab memorization run examples/digits_memorization.toml\n\n"
        "  dicelab memorization run examples/digits_memorization.toml --lam 0.1 --seed 1\n\n"
        "  dicelab memorization run examples/digits_memorization.toml --taps act1,act2,act3 --n 10 --out runs/m1\n\n"
        "  dicelab memorization run examples/digits_memorization.toml --reg uniform --set train.epochs=20"
    ),
)
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Run config (TOML) with a [memorization] table.")],
    lam: Annotated[float | None, typer.Option(help="Regulariser weight λ (every tap).")] = None,
    taps: Annotated[str | None, typer.Option(help="Comma-separated taps, e.g. input:head,act1.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Number of random-label values.")] = None,
    reg: Annotated[str | None, typer.Option(help="Regulariser: complement, uniform or grl.")] = None,
    seed: Annotated[int | None, typer.Option(help="Root seed.")] = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    no_plots: NoPlotsOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train one run with RLP heads; print clean / online / held-out RLP accuracy per tap with chance and
    R_proxy; write record.json, memorization.csv and the plots."""
    from dicelab.memorization.experiments import run

    overrides = list(set_ or [])
    if lam is not None:
        overrides.append(f"memorization.lam={lam!r}")
    if taps is not None:
        overrides.append("memorization.taps=" + json.dumps([t.strip() for t in taps.split(",") if t.strip()]))
    if reg is not None:
        overrides.append(f"memorization.reg={reg!r}")
    if seed is not None:
        overrides.append(f"seed={seed}")
    cfg = _load(config, overrides)
    if n is not None:   # by assignment: the file may spell the field n or num_labels
        from pydantic import ValidationError

        from dicelab.config import format_validation_error

        try:
            cfg.memorization.num_labels = n
        except ValidationError as exc:
            raise ConfigError("--n: " + format_validation_error(exc, "memorization")) from None
    res = run(cfg, out_dir=out, plots=not no_plots, quiet=quiet or as_json)
    if as_json:
        typer.echo(json.dumps({"status": res.record["status"], "summary": res.summary,
                               "files": [str(f) for f in res.files]}, indent=1))
        return
    from rich.table import Table

    final = res.record["final"]
    t = Table(title=f"{cfg.name} (seed {cfg.seed}): RLP accuracy, mean of the last 5 epochs — {res.record['status']}")
    for col in ("tap", "set", "d", "head params", "λ", "clean acc", "online acc", "held-out acc", "chance", "z",
                "R_proxy"):
        t.add_column(col, justify="right" if col not in ("tap",) else "left")
    for r in res.summary:
        t.add_row(r["tap"], str(r["set"]), str(r["d"]), f"{r['head_params']:,}", _f(r["lam"], 3), _f(r["clean_acc"]),
                  _f(r["online_acc"]), _f(r["heldout_acc"]), _f(r["chance"]), _f(r["z"], 1), _f(r["r_proxy"]))
    con = _console()
    con.print(t)
    con.print(f"task: train acc {_f(res.summary[0]['train_acc'] if res.summary else None)}, "
              f"test acc {_f(final.get('test_accuracy'))}")
    if res.run_dir is not None:
        con.print(f"run folder: {res.run_dir}")


def _sweep_table(res: Any, title: str) -> None:
    from rich.table import Table

    t = Table(title=title)
    for col in ("setting", "tap", "seeds", "train acc", "test acc", "clean RLP acc", "± std", "R_proxy",
                "held-out acc", "ratio", "diverged"):
        t.add_column(col, justify="left" if col in ("setting", "tap") else "right")
    for r in res.table:
        if r["set"] != 0:
            continue
        t.add_row(r["setting"], r["tap"], str(r["seeds"]), _f(r["train_acc"]), _f(r["test_acc"]), _f(r["clean_acc"]),
                  _f(r["clean_acc_std"]), _f(r["r_proxy"]), _f(r["heldout_acc"]), _f(r["ratio"], 2),
                  "[red]" + str(r["diverged"]) + "[/]" if r["diverged"] else "0")
    con = _console()
    con.print(t)
    con.print(f"{len(res.runs) and len({(r['setting'], r['seed']) for r in res.runs})} runs in {res.elapsed_s:.1f} s; "
              f"folder: {res.out_dir}")


@app.command(
    "sweep",
    epilog=(
        "One axis per call; the default is λ over the calibrated grid 0,0.03,0.1,0.3,1.\n\n"
        "Examples:\n\n"
        "  dicelab memorization sweep examples/digits_memorization.toml\n\n"
        "  dicelab memorization sweep examples/digits_memorization.toml --lam 0,0.03,0.1,0.3,1 --seeds 0,1,2\n\n"
        "  dicelab memorization sweep examples/digits_memorization.toml --weight-decay 0,5e-4,5e-3\n\n"
        "  dicelab memorization sweep examples/digits_memorization.toml --dropout 0,0.1,0.2 --workers 2\n\n"
        "  dicelab memorization sweep examples/digits_memorization.toml --augment none,input_noise:0.3,input_noise:0.5"
    ),
)
def sweep_cmd(
    config: Annotated[Path, typer.Argument(help="Run config (TOML) with a [memorization] table.")],
    lam: Annotated[str | None, typer.Option(help="λ grid, comma-separated (default 0,0.03,0.1,0.3,1).")] = None,
    weight_decay: Annotated[str | None, typer.Option("--weight-decay", help="Weight-decay grid.")] = None,
    dropout: Annotated[str | None, typer.Option(help="Dropout grid (randomness.dropout, after every hidden activation).")] = None,
    label_smoothing: Annotated[str | None, typer.Option("--label-smoothing", help="Label-smoothing grid.")] = None,
    augment: Annotated[str | None, typer.Option(help="Augmentations (randomness catalog), e.g. none,input_noise:0.3,flip,flip:vertical,translation:0.1.")] = None,
    seeds: Annotated[str, typer.Option(help="Seeds, comma-separated.")] = "0,1,2",
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: min(2, cores)).")] = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    no_plots: NoPlotsOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sweep one axis (λ or a standard regulariser) over seeds: table, sweep.csv, sweep_summary.csv and
    plots (train/test/RLP accuracy vs the axis; RLP accuracy vs epoch; vs depth for several taps)."""
    from dicelab.memorization.experiments import sweep

    given = {k: v for k, v in (("lam", lam), ("weight_decay", weight_decay), ("dropout", dropout),
                               ("label_smoothing", label_smoothing), ("augment", augment)) if v is not None}
    if len(given) > 1:
        raise ConfigError(f"one axis per sweep; got {', '.join('--' + k.replace('_', '-') for k in given)}")
    axis, text = next(iter(given.items())) if given else ("lam", None)
    if text is None:
        values = None
    elif axis == "augment":
        values = [v.strip() for v in text.split(",") if v.strip()]
    else:
        values = _floats(text, "--" + axis.replace("_", "-"))
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    cfg = _load(config, list(set_ or []))
    res = sweep(cfg, axis, values, _seeds(seeds), out_dir=out, workers=workers, plots=not no_plots,
                quiet=quiet or as_json)
    if as_json:
        typer.echo(json.dumps({"axis": axis, "table": res.table, "elapsed_s": res.elapsed_s,
                               "files": [str(f) for f in res.files]}, indent=1, default=str))
        return
    _sweep_table(res, f"{cfg.name}: sweep over {axis} (clean RLP acc = mean of the last 5 epochs; ratio vs first)")


@app.command(
    "regularizers",
    epilog=(
        "Runs the baseline and weight decay 5e-4,5e-3; dropout 0.1,0.2; label smoothing 0.1,0.3;\n"
        "input noise 0.3,0.5 (spec 04 check 10), each over the seeds.\n\n"
        "Examples:\n\n"
        "  dicelab memorization regularizers examples/digits_memorization.toml\n\n"
        "  dicelab memorization regularizers examples/digits_memorization.toml --seeds 0 --workers 2 --out runs/reg"
    ),
)
def regularizers_cmd(
    config: Annotated[Path, typer.Argument(help="Run config (TOML) with a [memorization] table.")],
    seeds: Annotated[str, typer.Option(help="Seeds, comma-separated.")] = "0,1,2",
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: min(2, cores)).")] = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    no_plots: NoPlotsOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sweep the standard regularisers (weight decay, dropout, label smoothing, augmentation) against one
    baseline: does each lower the RLP accuracy? Table with ratios, CSVs and small-multiple plots."""
    from dicelab.memorization.experiments import regularizer_sweep

    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    cfg = _load(config, list(set_ or []))
    res = regularizer_sweep(cfg, seeds=_seeds(seeds), out_dir=out, workers=workers, plots=not no_plots,
                            quiet=quiet or as_json)
    if as_json:
        typer.echo(json.dumps({"table": res.table, "elapsed_s": res.elapsed_s, "files": [str(f) for f in res.files]},
                              indent=1, default=str))
        return
    _sweep_table(res, f"{cfg.name}: standard regularisers (ratio = clean RLP acc / baseline)")


@app.command("probe", epilog=("Examples:\n\n  dicelab memorization probe runs/digits-memorization-s0-20261202-101500 "
                              "--tap act3\n\n  dicelab memorization probe RUN_DIR --tap input:head --epochs 500"))
def probe_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder with record.json and checkpoint.pt.")],
    tap: Annotated[str, typer.Option(help="Where the offline head reads (a module name, input:NAME, penultimate).")],
    epoch: Annotated[int | None, typer.Option(help="Check that the checkpoint is the one after this epoch.")] = None,
    epochs: Annotated[int, typer.Option(help="Probe training epochs (full batch, Adam).")] = 300,
    as_json: JsonOpt = False,
) -> None:
    """Fit a fresh head offline on the frozen checkpoint's features; print it next to the capacity floor
    (the same head on random features) and the online head's clean accuracy."""
    from dicelab.memorization.experiments import probe_run

    if epochs < 1:
        raise ConfigError(f"--epochs: must be >= 1, got {epochs}")
    res = probe_run(run_dir, tap, epochs=epochs, epoch=epoch)
    if as_json:
        typer.echo(json.dumps(res, indent=1))
        return
    from rich.table import Table

    t = Table(title=f"offline probe at {tap} (weights after epoch {res['epoch']})")
    for col in ("d", "n", "m", "head params", "probe train acc", "probe held-out acc", "capacity floor",
                "online head clean acc", "chance"):
        t.add_column(col, justify="right")
    t.add_row(str(res["d"]), str(res["n"]), str(res["m"]), f"{res['head_params']:,}", _f(res["train_acc"]),
              _f(res["heldout_acc"]), _f(res["capacity_floor"]), _f(res["online_clean_acc"]), _f(res["chance"]))
    _console().print(t)


@app.command("taps", epilog="Examples:\n\n  dicelab memorization taps examples/digits_memorization.toml")
def taps_cmd(
    config: Annotated[Path, typer.Argument(help="Run config (TOML).")],
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List every module name of the config's model with its output shape (what a tap may name)."""
    from dicelab.memorization.experiments import list_taps

    rows = list_taps(_load(config, list(set_ or []), require=False))
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    from rich.table import Table

    t = Table(title=f"modules of {config}")
    for col in ("name", "type", "output shape", "note"):
        t.add_column(col)
    for r in rows:
        shape = "x".join(str(s) for s in r["output_shape"]) if r["output_shape"] is not None else "-"
        t.add_row(r["name"], r["type"], shape, "penultimate = input:" + r["name"] if r["penultimate"] else "")
    _console().print(t)


@app.command("plot", epilog="Examples:\n\n  dicelab memorization plot runs/digits-memorization-s0-20261202-101500\n\n"
                            "  dicelab memorization plot runs/digits-memorization-lam-sweep-s0-20261202-101500")
def plot_cmd(path: Annotated[Path, typer.Argument(help="A memorization run folder or sweep folder.")]) -> None:
    """Re-render the PNG figures of a run or sweep folder from its CSVs."""
    from dicelab.memorization.plots import plot

    for p in plot(path):
        typer.echo(str(p))
