"""The random-label bank: one fixed random label per training sample, keyed by dataset index (spec 04 §3)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from dicelab.errors import ConfigError

__all__ = ["RandomLabelBank"]


class RandomLabelBank(nn.Module):
    """``num_sets`` independent random labels in {0, …, n−1} for each of ``num_samples`` samples.

    Drawn once, at construction, from ``generator`` alone (no global RNG): ``uniform`` draws i.i.d.
    labels, ``balanced`` a seeded permutation of ``arange(m) % n`` (within each class when ``per_class``,
    which needs ``targets``). ``labels`` is a buffer of shape ``(num_sets, num_samples)``, so it travels
    in ``state_dict()``; loading a bank of another shape, n, mode or kind is a :class:`ConfigError`
    naming the field.
    """

    labels: Tensor

    def __init__(self, num_samples: int, num_labels: int, *, generator: torch.Generator,
                 mode: Literal["uniform", "balanced"] = "uniform", per_class: bool = False,
                 targets: Tensor | None = None, num_sets: int = 1) -> None:
        super().__init__()
        if num_samples < 1:
            raise ConfigError(f"memorization bank: num_samples must be >= 1, got {num_samples}")
        if num_labels < 2:
            # the complement regulariser needs at least one label other than the random one
            raise ConfigError(f"memorization.num_labels: must be >= 2, got {num_labels}")
        if mode not in ("uniform", "balanced"):
            raise ConfigError(f"memorization.mode: unknown mode {mode!r} (uniform, balanced)")
        if num_sets < 1:
            raise ConfigError(f"memorization.num_sets: must be >= 1, got {num_sets}")
        if per_class and mode == "balanced" and targets is None:
            raise ConfigError("memorization.per_class: balanced per-class labels need the class targets")
        if targets is not None and targets.shape != (num_samples,):
            raise ConfigError(f"memorization bank: targets have shape {tuple(targets.shape)}, expected ({num_samples},)")
        self.num_samples, self.num_labels, self.mode = int(num_samples), int(num_labels), mode
        self.per_class, self.num_sets = bool(per_class), int(num_sets)
        sets = [self._draw(generator, targets) for _ in range(num_sets)]
        self.register_buffer("labels", torch.stack(sets))

    def _draw(self, g: torch.Generator, targets: Tensor | None) -> Tensor:
        m, n = self.num_samples, self.num_labels
        if self.mode == "uniform":
            return torch.randint(0, n, (m,), generator=g, dtype=torch.int64)
        if not self.per_class:
            return (torch.arange(m) % n)[torch.randperm(m, generator=g)]
        out = torch.empty(m, dtype=torch.int64)
        t = targets.detach().cpu()
        for c in torch.unique(t):  # balance inside each class: each value ⌊m_c/n⌋ or ⌈m_c/n⌉ times
            where = (t == c).nonzero().flatten()
            out[where] = (torch.arange(len(where)) % n)[torch.randperm(len(where), generator=g)]
        return out

    def __getitem__(self, idx: Tensor) -> Tensor:
        """Labels of dataset indices ``idx``: shape ``(num_sets, len(idx))``."""
        return self.labels[:, idx.to(self.labels.device)]

    def __len__(self) -> int:
        return self.num_samples

    def checksum(self) -> int:
        """A cheap fingerprint of the labels (equal on every rank that derived the same bank)."""
        weights = torch.arange(1, self.labels.numel() + 1, device=self.labels.device, dtype=torch.int64) % 1_000_003
        return int((self.labels.flatten() * weights).sum().item())

    def check_across_ranks(self) -> None:
        """Under ``torch.distributed`` every rank must hold the same bank; all-reduce the checksum to check."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        mine = torch.tensor([self.checksum()], dtype=torch.int64, device=self.labels.device)
        lo, hi = mine.clone(), mine.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if lo.item() != hi.item():
            raise ConfigError("memorization.check_bank: ranks derived different random-label banks "
                              "(is the root seed the same on every rank?)")

    # -- state ---------------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "num_labels": self.num_labels, "mode": self.mode,
                "per_class": self.per_class, "num_sets": self.num_sets}

    def get_extra_state(self) -> dict[str, Any]:
        return self._meta()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        pass  # checked in _load_from_state_dict, before the buffer copy could fail with a shape error

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        meta = state_dict.get(prefix + "_extra_state")
        if meta is not None:
            for field, mine in self._meta().items():
                theirs = meta.get(field)
                if theirs != mine:
                    raise ConfigError(f"memorization.{field}: the saved random-label bank has {field}={theirs!r}, "
                                      f"this run has {mine!r}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return (f"num_samples={self.num_samples}, num_labels={self.num_labels}, mode={self.mode!r}, "
                f"per_class={self.per_class}, num_sets={self.num_sets}")
