"""Forced pre-pruning (spec 06 §6.1): layers whose units each hold ``n_frozen`` fixed incoming entries.

The mask and the frozen values are *buffers*, drawn from the ``model.mask`` stream of a structure seed
(not the run seed), so two runs with different seeds share the structure and can still be compared.
A permutation of the weights cannot carry a buffer along, so units with different masks stop being
interchangeable: the permutation symmetry is broken.

``W_eff = where(mask, frozen, W)``: frozen entries get no gradient, no weight decay and no momentum
(the free parameter is zero there and never receives a gradient). ``n_frozen=0`` is "off": the layer is
bit-identical to ``nn.Linear`` / ``nn.Conv2d`` with the same initialisation.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dicelab.errors import ConfigError
from dicelab.models.activations import make_activation
from dicelab.models.mlp import mlp_sites

__all__ = ["FrozenMaskLinear", "FrozenMaskConv2d", "PrePrunedMLP", "draw_masks", "prepruned_mlp_factory"]

VALUES = ("zero", "normal")


def _mask_generator(generator: torch.Generator | None, structure_seed: int) -> torch.Generator:
    if generator is not None:
        return generator
    from dicelab.seeding import generator as make

    return make(int(structure_seed), "model.mask")


def draw_masks(rows: int, cols: int, n_frozen: int, generator: torch.Generator) -> torch.Tensor:
    """A (rows, cols) bool mask with ``n_frozen`` True entries per row, drawn without replacement;
    a row equal to an earlier one is redrawn, so all rows differ."""
    if not 0 <= n_frozen <= cols:
        raise ConfigError(f"model.options.n_frozen: {n_frozen} outside [0, {cols}] (fan-in {cols})")
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    if n_frozen == 0:
        return mask
    if math.comb(cols, n_frozen) < rows:
        raise ConfigError(f"model.options.n_frozen: only {math.comb(cols, n_frozen)} distinct masks of "
                          f"{n_frozen} in {cols} for {rows} units")
    seen: set[tuple[int, ...]] = set()
    for r in range(rows):
        for _ in range(10000):
            idx = torch.randperm(cols, generator=generator)[:n_frozen]
            key = tuple(sorted(idx.tolist()))
            if key not in seen:
                break
        else:  # pragma: no cover - needs an adversarially full mask space
            raise ConfigError(f"model.options.n_frozen: could not draw {rows} distinct masks")
        seen.add(key)
        mask[r, idx] = True
    return mask


def _unit_mask(layer: str, rows: int, cols: int, n_frozen: int, value: str, mask: torch.Tensor | None,
               generator: torch.Generator | None, structure_seed: int) -> tuple[torch.Tensor, torch.Generator | None]:
    """The (rows, cols) bool mask of frozen inputs per unit (drawn unless given) and the generator that the
    frozen values draw from (needed only for ``value="normal"``)."""
    gen = _mask_generator(generator, structure_seed) if mask is None or value == "normal" else None
    if mask is None:
        mask = draw_masks(rows, cols, int(n_frozen), gen)
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape != (rows, cols):
        raise ConfigError(f"{layer}: mask shape {tuple(mask.shape)} != {(rows, cols)}")
    return mask, gen


def _frozen_values(shape: Sequence[int], mask: torch.Tensor, value: str, kappa: float,
                   generator: torch.Generator) -> torch.Tensor:
    if value not in VALUES:
        raise ConfigError(f"model.options.value: {value!r} is not one of {', '.join(VALUES)}")
    if value == "zero":
        return torch.zeros(shape)
    return kappa * torch.randn(tuple(shape), generator=generator) * mask


class FrozenMaskLinear(nn.Linear):
    """``nn.Linear`` with ``n_frozen`` frozen incoming entries per unit (0, or κ·N(0,1) for ``value="normal"``).

    ``mask`` may be given explicitly (block-diagonal modules); otherwise it is drawn from ``generator``
    (default: ``model.mask`` of ``structure_seed``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, n_frozen: int = 8,
                 value: str = "zero", kappa: float = 1.0, mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, structure_seed: int = 0) -> None:
        super().__init__(in_features, out_features, bias)  # the same init draws as nn.Linear
        mask, gen = _unit_mask("FrozenMaskLinear", out_features, in_features, n_frozen, value, mask, generator,
                               structure_seed)
        self.register_buffer("mask", mask)
        self.register_buffer("frozen", _frozen_values(mask.shape, mask, value, kappa, gen).to(self.weight.dtype))
        self.value, self.kappa = value, float(kappa)
        self._active = bool(mask.any())
        if self._active:
            with torch.no_grad():
                self.weight.masked_fill_(self.mask, 0.0)  # the free parameter never holds a frozen entry

    def effective_weight(self) -> torch.Tensor:
        return torch.where(self.mask, self.frozen, self.weight) if self._active else self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, frozen={int(self.mask.sum())}, value={self.value}"


class FrozenMaskConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose output channels each freeze ``n_frozen`` whole input channels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int | str = 0, bias: bool = True, *, n_frozen: int = 1, value: str = "zero",
                 kappa: float = 1.0, mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 structure_seed: int = 0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        mask, gen = _unit_mask("FrozenMaskConv2d", out_channels, in_channels, n_frozen, value, mask, generator,
                               structure_seed)
        self.register_buffer("mask", mask)
        full = mask[:, :, None, None].expand_as(self.weight)
        self.register_buffer("frozen", _frozen_values(self.weight.shape, full, value, kappa, gen).to(self.weight.dtype))
        self.value, self.kappa = value, float(kappa)
        self._active = bool(mask.any())
        if self._active:
            with torch.no_grad():
                self.weight.masked_fill_(full, 0.0)

    def effective_weight(self) -> torch.Tensor:
        if not self._active:
            return self.weight
        return torch.where(self.mask[:, :, None, None], self.frozen, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class PrePrunedMLP(nn.Sequential):
    """An :class:`~dicelab.models.MLP` (``flatten, fc1, act1, …, head``) whose hidden layers are
    :class:`FrozenMaskLinear`; the head stays dense unless ``prune_head``."""

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int, activation: str = "relu", *,
                 n_frozen: int = 8, value: str = "zero", kappa: float = 1.0, prune_head: bool = False,
                 structure_seed: int = 0) -> None:
        gen = _mask_generator(None, structure_seed)
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        prev = in_features
        for i, w in enumerate(widths, start=1):
            layers[f"fc{i}"] = FrozenMaskLinear(prev, w, n_frozen=min(n_frozen, prev), value=value, kappa=kappa,
                                                generator=gen)
            layers[f"act{i}"] = make_activation(activation)
            prev = w
        layers["head"] = (FrozenMaskLinear(prev, num_classes, n_frozen=min(n_frozen, prev), value=value, kappa=kappa,
                                           generator=gen) if prune_head else nn.Linear(prev, num_classes))
        super().__init__(layers)
        self.widths = tuple(widths)

    def sites(self) -> dict[str, list[str]]:
        return mlp_sites(len(self.widths))


def prepruned_mlp_factory(input_shape, num_classes, widths=(128, 128), activation="relu", n_frozen=8, value="zero",
                          kappa=1.0, prune_head=False, structure_seed=0, **unused) -> PrePrunedMLP:
    """``model.name = "prepruned_mlp"``; options ``n_frozen``, ``value``, ``kappa``, ``prune_head``,
    ``structure_seed``."""
    if unused:
        raise ConfigError(f"model.{next(iter(unused))}: not an option of model 'prepruned_mlp'")
    return PrePrunedMLP(math.prod(input_shape), widths, num_classes, activation, n_frozen=int(n_frozen), value=value,
                        kappa=float(kappa), prune_head=bool(prune_head), structure_seed=int(structure_seed))
