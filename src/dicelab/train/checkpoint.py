"""Checkpoints: plain weights, optimizer state, generator states and hook states in one file.

Everything saved is a tensor or a plain Python value, so loading uses ``torch.load(weights_only=True)``
(no arbitrary code runs when a checkpoint is opened).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dicelab.errors import DicelabError

__all__ = ["save_checkpoint", "load_checkpoint"]

FORMAT = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus a format tag) atomically to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise DicelabError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, foreign pickle, ...
        raise DicelabError(f"{path}: not a readable dicelab checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DicelabError(f"{path}: not a dicelab checkpoint (format {payload.get('format') if isinstance(payload, dict) else '?'})")
    return payload
