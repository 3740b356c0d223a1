"""Flat per-step random buffers over a set of tensors (spec 01 §8).

Weight noise, gradient noise and gradient dropout draw one number per targeted entry per step. Drawing
them in one generator call into a preallocated flat buffer, with a view per tensor, and applying them with
one ``torch._foreach_*`` call keeps a step to a handful of kernel launches however many tensors there are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dicelab.errors import ConfigError

__all__ = ["TargetBuffer", "select_targets", "keep_mask", "TARGETS"]

TARGETS = ("all", "weights")


def select_targets(model: nn.Module, params: Sequence[nn.Parameter], sites: dict[str, list[str]], targets: str,
                   technique: str) -> list[nn.Parameter]:
    """``"all"``: every trainable tensor (biases, normalisation γ/β included); ``"weights"``: only the weights
    at ``connect`` sites (the underlying tensor when the weight is parametrized)."""
    if targets == "all":
        return list(params)
    chosen = []
    for name in sites.get("connect", []):
        module = model.get_submodule(name)
        if hasattr(module, "parametrizations") and "weight" in module.parametrizations:
            chosen.append(module.parametrizations.weight.original)
        else:
            chosen.append(module.weight)
    if not chosen:
        raise ConfigError(f"randomness.{technique}.targets: the model has no connect sites (Linear/Conv layers)")
    return chosen


_INT16_LEVELS = 1 << 16


def keep_mask(shape, p: float, generator: torch.Generator, device, dtype, scale: float = 1.0,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """A float mask, 1·scale where an entry is kept (probability 1−p) and 0 where it is dropped.

    For p·2¹⁶ ≥ 64 each entry compares one 16-bit integer (four from every 64-bit ``random_()`` draw, about a
    fifth of the cost of one float uniform per entry) with round(p·2¹⁶), so P(drop) = round(p·2¹⁶)/2¹⁶, within
    1/128 of p relative; rarer drops fall back to float uniforms (an entry is kept where U > p).
    """
    n = 1
    for d in shape:
        n *= d
    mask = out if out is not None else torch.empty(shape, device=device, dtype=dtype)
    threshold = round(p * _INT16_LEVELS)
    if threshold >= 64:
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
        bits.random_(-(1 << 63), (1 << 63) - 1, generator=generator)
        # int16 values are uniform on [−2¹⁵, 2¹⁵); dropped where v < −2¹⁵ + threshold
        words = bits.view(torch.int16)[:n].view(shape)
        torch.ge(words, threshold - (1 << 15), out=mask)
    else:
        mask.uniform_(generator=generator)
        mask.gt_(p)
    if scale != 1.0:
        mask.mul_(scale)
    return mask


class TargetBuffer:
    """One flat buffer with a view shaped like each target tensor."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.tensors = list(tensors)
        if not self.tensors:
            raise ValueError("no tensors to target")
        first = self.tensors[0]
        total = sum(t.numel() for t in self.tensors)
        self.flat = torch.empty(total, dtype=first.dtype, device=first.device)
        self.views: list[torch.Tensor] = []
        offset = 0
        for t in self.tensors:
            self.views.append(self.flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def normal(self, *, generator: torch.Generator) -> list[torch.Tensor]:
        self.flat.normal_(generator=generator)
        return self.views

    def uniform(self, *, generator: torch.Generator) -> list[torch.Tensor]:
        self.flat.uniform_(generator=generator)
        return self.views

    def grads(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The existing gradients and the matching buffer views (tensors whose ``.grad`` is None are skipped)."""
        grads, views = [], []
        for t, v in zip(self.tensors, self.views, strict=True):
            if t.grad is not None:
                grads.append(t.grad)
                views.append(v)
        return grads, views
