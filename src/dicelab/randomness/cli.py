"""``dicelab techniques``: the catalog as a table or JSON, reference-vector decoding, previews (spec 01 §7)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dicelab.errors import ConfigError

__all__ = ["techniques_command", "catalog_rows", "config_toml"]

EPILOG = (
    "Examples:\n\n"
    "  dicelab techniques\n\n"
    "  dicelab techniques --level data\n\n"
    "  dicelab techniques --json\n\n"
    '  dicelab techniques --decode "0,1,0,0,0,0,0,0,0.05,0,0,0,0,0,1,3,0,128,0,6,0,0"\n\n'
    "  dicelab techniques --preview rotation=0.2 --dataset digits --out rot.png\n\n"
    "  dicelab techniques --preview lr_schedule=-0.5 --out lr.png"
)


def catalog_rows(level: str | None = None) -> list[dict[str, Any]]:
    """One dict per technique: name, level, paper index/group/column, hooks, knobs (main knob first)."""
    from dicelab.randomness import techniques

    return [{"name": c.name, "level": str(c.level), "paper_index": c.paper_index, "paper_group": c.paper_group,
             "paper_column": c.column(), "hooks": sorted(c.hooks), "summary": c.summary,
             "knobs": [k.describe() for k in c.knobs]} for c in techniques(level)]


def _range_text(k: dict[str, Any]) -> str:
    if k["kind"] == "choice":
        return " | ".join(k["choices"])
    if k["kind"] == "bool":
        return "true | false"
    return f"[{k['low']:g}, {k['high']:g}]" + (" log" if k["scale"] == "log" else "")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if v is None:
        raise ValueError("TOML has no null")
    return repr(v)


def config_toml(cfg) -> str:
    """``cfg`` as a ``[randomness]`` TOML table (unset techniques left out)."""
    lines = ["[randomness]"]
    if cfg.preset != "none":
        lines.append(f"preset = {_toml_value(cfg.preset)}")
    from dicelab.randomness import technique_names

    for name in technique_names():
        table = cfg.table(name)
        if table is None:
            continue
        items = {k: v for k, v in table.items() if v is not None}
        if not items:
            continue
        if len(items) == 1:
            lines.append(f"{name} = {_toml_value(next(iter(items.values())))}")
        else:
            inner = ", ".join(f"{k} = {_toml_value(v)}" for k, v in items.items())
            lines.append(f"{name} = {{ {inner} }}")
    return "\n".join(lines)


def techniques_command(
    level: Annotated[str | None, typer.Option(help="Only this level: data, model, optimization, learning.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list of the techniques.")] = False,
    decode: Annotated[str | None, typer.Option(help="Print the [randomness] table of a reference raw vector "
                                                    "(22 comma-separated numbers).")] = None,
    preview: Annotated[str | None, typer.Option(help="Write a PNG of one technique, e.g. rotation=0.2.")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset for image previews.")] = "digits",
    out: Annotated[Path, typer.Option(help="Where --preview writes its PNG.")] = Path("preview.png"),
    seed: Annotated[int, typer.Option(help="Seed of the preview's draws.")] = 0,
) -> None:
    """List the 22 randomness techniques: level, main knob (range, scale), off value, options, hooks."""
    from dicelab.randomness import Level

    if level is not None and level not in [lv.value for lv in Level]:
        raise ConfigError(f"--level: unknown level {level!r} (known: {', '.join(lv.value for lv in Level)})")
    if decode is not None:
        from dicelab.randomness.encoding import decode as decode_vector

        try:
            raw = [float(v) for v in decode.replace(" ", "").split(",") if v]
        except ValueError:
            raise ConfigError(f"--decode: not a list of numbers: {decode!r}") from None
        typer.echo(config_toml(decode_vector(raw)))
        return
    if preview is not None:
        from dicelab.randomness.preview import preview as write_preview

        typer.echo(f"preview: {write_preview(preview, out, dataset=dataset, seed=seed)}")
        return
    rows = catalog_rows(level)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dicelab randomness techniques (spec 01)")
    for col in ("#", "name", "level", "main knob", "search range", "off", "options", "hooks"):
        table.add_column(col)
    for r in rows:
        main, *opts = r["knobs"]
        table.add_row(str(r["paper_index"]), r["name"], r["level"], main["name"], _range_text(main),
                      str(main["off"]), ", ".join(f"{o['name']}={o['off']}" for o in opts) or "-",
                      ", ".join(r["hooks"]))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def readme_table() -> str:
    """The README's table of the 22 techniques by level (a test keeps the README in sync with it)."""
    from dicelab.randomness import Level, techniques

    lines = ["| level | # | technique | main knob: search range | off | what it does |", "|---|---|---|---|---|---|"]
    for level in Level:
        for c in techniques(level):
            k = c.main().describe()
            rng = _range_text(k).replace(" | ", ", ")   # a pipe would split the Markdown cell
            off = {None: "inherit", False: "false"}.get(k["off"], k["off"]) if not isinstance(k["off"], float) \
                else f"{k['off']:g}"
            lines.append(f"| {level.value} | {c.paper_index} | `{c.name}` | `{k['name']}`: {rng} | {off} | "
                         f"{c.summary} |")
    return "\n".join(lines)
