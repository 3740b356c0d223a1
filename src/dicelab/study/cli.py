"""``dicelab study``: run, resume, inspect, analyse and report randomness studies (thin layer over the library)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from dicelab.errors import ConfigError

app = typer.Typer(
    help="Search where and how much randomness helps (PSO on Optuna), with workers on shared storage, "
         "analysis and an HTML report.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

StorageOpt = Annotated[str | None, typer.Option("--storage", help="Storage URL: journal:PATH, sqlite:///PATH, "
                                                "postgresql+psycopg://..., grpc://HOST:PORT. Default: "
                                                "journal:runs/<study>/study.journal.")]
StudyOpt = Annotated[str, typer.Option("--study", help="Study name.")]


def _set_journal_lock(value: str | None) -> str | None:
    # An environment variable, so that spawned worker processes open the journal with the same lock.
    if value is not None:
        if value not in ("symlink", "open"):
            raise typer.BadParameter(f"{value!r} is not one of symlink, open")
        import os

        os.environ["DICELAB_JOURNAL_LOCK"] = value
    return value


JournalLockOpt = Annotated[str | None, typer.Option(
    "--journal-lock", callback=_set_journal_lock,
    help="Journal file lock: symlink (default) or open (for network filesystems).")]


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 140)


def _storage_for(storage: str | None, study: str | None, runs_dir: Path = Path("runs")) -> str:
    from dicelab.study.storage import default_storage_url

    if storage:
        return storage
    if not study:
        raise ConfigError("--storage is required when --study is not given")
    return default_storage_url(study, runs_dir)


@app.command("run", epilog=(
    "Examples:\n\n"
    "  dicelab study run examples/quick_digits.toml --workers 2\n\n"
    "  dicelab study run examples/quick_digits.toml --set study.sampler=tpe --set study.name=digits-tpe\n\n"
    "  dicelab study run study.toml --storage postgresql+psycopg://me@db/dicelab --workers 4\n\n"
    "Running the same command again resumes the study."))
def run(
    config: Annotated[Path, typer.Argument(help="Study file (TOML).")],
    storage: StorageOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Local worker processes.")] = 1,
    n_trials: Annotated[int | None, typer.Option("--n-trials", min=1, help="Budget (finished trials).")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds after which no trial starts.")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a field: section.key=value.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    journal_lock: JournalLockOpt = None,
) -> None:
    """Create (or resume) a study and run workers until its budget is spent."""
    from dicelab.study.config import load_study_config
    from dicelab.study.runner import run_study, study_status
    from dicelab.study.storage import storage_label

    cfg = load_study_config(config, overrides or [])
    url = storage or cfg.storage_url()
    run_study(cfg, url, workers=workers, n_trials=n_trials, timeout_s=timeout, quiet=quiet)
    _print_status(study_status(url, cfg.study.name))
    typer.echo(f"storage: {storage_label(url)}")
    typer.echo(f"next: dicelab study analyze --storage {storage_label(url)} --study {cfg.study.name}")


@app.command("worker", epilog=(
    "Examples:\n\n"
    "  dicelab study worker --storage journal:/shared/runs/s/study.journal --study s\n\n"
    "  dicelab study worker --storage postgresql+psycopg://me@db/dicelab --study s --workers 8"))
def worker(
    storage: Annotated[str, typer.Option("--storage", help="Storage URL of the study.")],
    study: StudyOpt,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes on this machine.")] = 1,
    n_trials: Annotated[int | None, typer.Option("--n-trials", min=1, help="At most this many trials per worker.")] = None,
    journal_lock: JournalLockOpt = None,
) -> None:
    """Join a stored study as a worker (the config is read from storage)."""
    from dicelab.study.runner import run_workers

    report = run_workers(storage, study, workers=workers, max_trials=n_trials)
    typer.echo(f"worker {report.worker}: {report.completed} complete, {report.pruned} pruned, "
               f"{report.failed} failed; stopped: {report.stopped}"
               + (f" (and {workers - 1} spawned workers)" if workers > 1 else ""))


def _print_status(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="dicelab studies")
    for col in ("study", "budget", "finished", "states", "statuses", "best", "running"):
        table.add_column(col)
    for r in rows:
        best = r["best"]
        table.add_row(r["study"], str(r["budget"]), str(r["finished"]),
                      ", ".join(f"{k} {v}" for k, v in sorted(r["by_state"].items())),
                      ", ".join(f"{k} {v}" for k, v in sorted(r["by_status"].items())),
                      "-" if best is None else f"#{best['number']} {best['value']:.4f}",
                      "; ".join(f"#{x['number']} {x['worker']} {x['age_s']}s" for x in r["running"]) or "-")
    _console().print(table)


@app.command("status", epilog="Examples:\n\n  dicelab study status --storage journal:runs/digits-quick/study.journal")
def status(
    storage: StorageOpt = None,
    study: Annotated[str | None, typer.Option("--study", help="Only this study.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Counts by state and status, the best trial, running trials and their age."""
    from dicelab.study.runner import study_status

    rows = study_status(_storage_for(storage, study), study)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    else:
        _print_status(rows)


@app.command("export", epilog=(
    "Examples:\n\n  dicelab study export --study digits-quick --format csv --out trials.csv"))
def export(
    study: StudyOpt,
    storage: StorageOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    out: Annotated[Path | None, typer.Option("--out", help="Output file.")] = None,
) -> None:
    """Write the trials table (one row per trial: state, status, value, test, coordinates, strengths)."""
    import optuna

    from dicelab.study.analysis import trials_table
    from dicelab.study.storage import open_storage

    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"--format must be parquet or csv, got {fmt!r}")
    url = _storage_for(storage, study)
    try:
        s = optuna.load_study(study_name=study, storage=open_storage(url))
    except KeyError:
        raise ConfigError(f"no study {study!r} in {url}") from None
    table = trials_table(s)
    out = out or Path(f"{study.replace('/', '_')}-trials.{fmt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False) if fmt == "parquet" else table.to_csv(out, index=False)
    typer.echo(f"{len(table)} trials -> {out}")


@app.command("analyze", epilog=(
    "Examples:\n\n"
    "  dicelab study analyze --study digits-quick\n\n"
    "  dicelab study analyze --study digits-quick --seeds 5 --workers 2\n\n"
    "  dicelab study analyze --storage journal:runs/paper.journal --study paper-VGG-CIFAR10 --no-rerun"))
def analyze_cmd(
    study: StudyOpt,
    storage: StorageOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default runs/<study>/analysis).")] = None,
    rerun: Annotated[bool, typer.Option("--rerun/--no-rerun", help="Best-vs-default and ablation re-runs.")] = True,
    seeds: Annotated[int, typer.Option("--seeds", min=2, help="Re-run seeds per arm.")] = 5,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes for the re-runs.")] = 1,
    final_epochs: Annotated[int | None, typer.Option("--final-epochs", min=1, help="Re-run epochs.")] = None,
    full_train: Annotated[bool, typer.Option("--full-train", help="Re-run on train + validation.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Imported logs: rows of this fidelity (20).")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Importance intervals from B resamples.")] = 0,
) -> None:
    """Correlations, importance, best vs default and ablation; tables printed and written to CSV/Parquet."""
    from dicelab.study.analyze_study import analyze, print_analysis

    url = _storage_for(storage, study)
    result = analyze(url, study, out_dir=out, rerun=rerun, seeds=seeds, workers=workers,
                     final_epochs=final_epochs, full_train=full_train, epochs=epochs, bootstrap=bootstrap)
    print_analysis(result, _console())
    typer.echo(f"analysis: {result.out_dir}")


@app.command("report", epilog=(
    "Examples:\n\n  dicelab study report --study digits-quick\n\n"
    "  dicelab study report --study digits-quick --out report.html"))
def report(
    study: StudyOpt,
    storage: StorageOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="HTML file (default runs/<study>/report.html).")] = None,
    analysis_dir: Annotated[Path | None, typer.Option("--analysis", help="Analysis folder to read.")] = None,
) -> None:
    """One self-contained HTML file with the study's plots and tables (analysis runs first if missing)."""
    from dicelab.study.analysis import Analysis
    from dicelab.study.analyze_study import analyze, default_analysis_dir
    from dicelab.study.report import write_report

    folder = analysis_dir or default_analysis_dir(study)
    if (folder / "header.json").exists():
        result = Analysis.load(folder)
    else:
        result = analyze(_storage_for(storage, study), study, out_dir=folder, rerun=False)
    path = write_report(result, out or folder.parent / "report.html")
    typer.echo(f"report: {path}")


@app.command("import-paper-logs", epilog=(
    "Examples:\n\n"
    "  dicelab study import-paper-logs ../shared/data/rolling_dice_configs.csv.gz\n\n"
    "  dicelab study import-paper-logs logs.csv.gz --storage journal:runs/paper.journal --arch VGG --dataset CIFAR10"))
def import_paper_logs_cmd(
    path: Annotated[Path, typer.Argument(help="rolling_dice_configs.csv.gz (the reference logs).")],
    storage: Annotated[str, typer.Option("--storage", help="Storage URL.")] = "journal:runs/paper-logs/study.journal",
    arch: Annotated[str | None, typer.Option("--arch", help="FC or VGG.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="MNIST, Fashion-MNIST or CIFAR10.")] = None,
    include_demo: Annotated[bool, typer.Option("--include-demo", help="Also the authors' 2024 demo file.")] = False,
) -> None:
    """Load the reference study's logged runs into one study per (arch, dataset)."""
    from dicelab.study.paper_logs import import_paper_logs

    names = import_paper_logs(path, storage, arch=arch, dataset=dataset, include_demo=include_demo)
    for n in names:
        typer.echo(f"imported {n}")
    typer.echo(f"next: dicelab study analyze --storage {storage} --study {names[0] if names else 'NAME'} --no-rerun")
