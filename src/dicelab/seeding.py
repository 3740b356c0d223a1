"""One root seed, one independent random stream per named source.

A run has a single root seed. Every randomness source (``data.order``, ``init``, each technique
``randomness.<name>``, ``optim.<name>``, ``search`` ...) gets its own generator whose seed is a hash of
the root seed and the source name. Streams are keyed by name, never by creation order, so adding,
removing or re-seeding one source never shifts another's draws.

>>> g = generator(0, "data.order")
>>> torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=generator(0, "data.order")))
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["derive_seed", "generator", "numpy_rng", "SeedBank"]

_SEED_BITS = 63  # torch.Generator.manual_seed takes any non-negative int below 2**64; keep it signed-safe


def derive_seed(root_seed: int, name: str) -> int:
    """The seed of source ``name`` under ``root_seed``: a 63-bit slice of SHA-256(root, name).

    A cryptographic hash makes streams of different names statistically independent and stable
    across Python versions and machines (unlike ``hash()``).
    """
    if not isinstance(root_seed, int) or isinstance(root_seed, bool):
        raise TypeError(f"root_seed must be an int, got {type(root_seed).__name__}")
    digest = hashlib.sha256(f"dicelab:{root_seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << _SEED_BITS) - 1)


def generator(root_seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` for source ``name``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(root_seed, name))
    return g


def numpy_rng(root_seed: int, name: str) -> np.random.Generator:
    """A NumPy generator for source ``name`` (for code that works in NumPy, e.g. samplers)."""
    return np.random.default_rng(derive_seed(root_seed, name))


class SeedBank:
    """The seeds of one run: a root seed plus optional per-source overrides.

    ``overrides`` maps a source name to a seed that replaces the derived one; the override is
    itself hashed with the source name, so ``{"randomness.dropout": 1}`` never collides with
    another source that happens to get seed 1.
    """

    def __init__(self, root_seed: int, overrides: Mapping[str, int] | None = None) -> None:
        self.root_seed = int(root_seed)
        self.overrides = dict(overrides or {})
        self.used: dict[str, int] = {}  # every source asked for so far -> its seed (for run records)

    def seed(self, name: str) -> int:
        if name in self.overrides:
            value = derive_seed(int(self.overrides[name]), name)
        else:
            value = derive_seed(self.root_seed, name)
        self.used[name] = value
        return value

    def generator(self, name: str, device: torch.device | str = "cpu") -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(self.seed(name))
        return g

    def numpy(self, name: str) -> np.random.Generator:
        return np.random.default_rng(self.seed(name))

    def __repr__(self) -> str:
        return f"SeedBank(root_seed={self.root_seed}, overrides={self.overrides})"
