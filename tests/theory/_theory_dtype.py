"""float64 as the default dtype inside a block (the theory tests' 1e-6..1e-12 checks need it)."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
