"""PNG figures from the JSON-able plot specs that experiments store in result.json (re-renderable)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["render", "render_all"]


def _arr(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def _overlay(ax: Any, spec: dict[str, Any]) -> None:
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(spec["curves"]):
        col = colors[i % len(colors)]
        x, mu = _arr(c["x"]), _arr(c["mean"])
        ax.plot(x, mu, "-o", ms=3, color=col, label=f"{c['label']} (projected mean)")
        if c.get("sd") is not None:
            sd = _arr(c["sd"])
            ax.fill_between(x, mu - sd, mu + sd, color=col, alpha=0.12, lw=0)
        if c.get("se") is not None:
            se = _arr(c["se"])
            ax.fill_between(x, mu - 2 * se, mu + 2 * se, color=col, alpha=0.35, lw=0)
        if c.get("raw") is not None:
            ax.plot(x, _arr(c["raw"]), ":", color=col, label=f"{c['label']} (raw mean)")
    lim = spec.get("limit")
    if lim is not None:
        ax.plot(_arr(lim["x"]), _arr(lim["y"]), "k--", lw=1.5, label=lim.get("label", "limit"))


def _loglog(ax: Any, spec: dict[str, Any]) -> None:
    x, y = _arr(spec["x"]), _arr(spec["y"])
    ax.loglog(x, y, "o", ms=7, label="measured k*")
    s, se = spec["slope"], spec.get("slope_se", 0.0)
    xx = np.geomspace(x.min() / 1.3, x.max() * 1.3, 50)
    c = np.mean(np.log(y) - s * np.log(x))
    ax.loglog(xx, np.exp(c) * xx**s, "-", label=f"fit slope {s:.3f} ± {se:.3f}")
    for r in spec.get("refs", []):
        cr = np.mean(np.log(y) - r * np.log(x))
        ax.loglog(xx, np.exp(cr) * xx**r, ":", color="gray", label=f"reference slope {r:g}")


def _lines(ax: Any, spec: dict[str, Any]) -> None:
    for ln in spec["lines"]:
        ax.plot(_arr(ln["x"]), _arr(ln["y"]), ln.get("style", "-"), label=ln["label"])
    if spec.get("logy"):
        ax.set_yscale("log")


def _hist(ax: Any, spec: dict[str, Any]) -> None:
    edges = _arr(spec["edges"])
    for h in spec["hists"]:
        ax.stairs(_arr(h["theta"]), edges, label=h["label"], fill=True, alpha=0.35)
    _lines(ax, spec)


_KINDS = {"overlay": _overlay, "loglog": _loglog, "lines": _lines, "hist": _hist}


def render(spec: dict[str, Any], path: str | Path) -> Path:
    """Render one figure spec to a PNG file."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    _KINDS[spec["kind"]](ax, spec)
    ax.set_title(spec.get("title", ""))
    ax.set_xlabel(spec.get("xlabel", ""))
    ax.set_ylabel(spec.get("ylabel", ""))
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def render_all(series: Sequence[dict[str, Any]], out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Render every figure spec into ``out_dir`` as ``<name>.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [render(s, out / f"{s['name']}.png") for s in series]
