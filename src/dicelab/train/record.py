"""JSON run records: config, seeds, per-epoch metrics, timings, status and library versions.

Records are written atomically (temporary file, then rename), so a reader never sees half a file and
an interrupted run keeps its last complete epoch on disk.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["library_versions", "new_run_dir", "write_json_atomic", "clean_floats", "utc_now"]


def library_versions() -> dict[str, str]:
    import numpy
    import torch

    from dicelab import __version__

    return {"dicelab": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": numpy.__version__, "platform": platform.platform()}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_dir(root: str | Path, name: str, seed: int) -> Path:
    """A fresh folder ``root/<name>-s<seed>-<UTC time>[-k]``; an existing folder is never reused."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{name}-s{seed}-{stamp}"
    for k in range(1000):
        path = base if k == 0 else base.with_name(f"{base.name}-{k}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder under {root}")


def clean_floats(value: Any) -> Any:
    """Replace non-finite floats by None: strict JSON has no NaN or Infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_floats(v) for v in value]
    return value


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(clean_floats(payload), indent=2, default=str, allow_nan=False))
    os.replace(tmp, path)
