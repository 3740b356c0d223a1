"""Modular MLP (spec 06 §6.3): ``n_modules`` modules of ``module_width`` units each.

Module m's first layer sees a fixed, distinct subset of the inputs; hidden layers are block-diagonal
(:class:`~dicelab.models.prepruned.FrozenMaskLinear` with the off-block entries frozen at 0); the output
layer is dense. Units are interchangeable only within their module, so each layer's group shrinks from
(M·w)! to (w!)^M.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from dicelab.errors import ConfigError
from dicelab.models.activations import make_activation
from dicelab.models.mlp import mlp_sites
from dicelab.models.prepruned import FrozenMaskLinear

__all__ = ["ModularMLP", "modular_mlp_factory", "receptive_fields"]


def receptive_fields(in_dim: int, n_modules: int, receptive: str, generator: torch.Generator) -> list[torch.Tensor]:
    """Input indices seen by each module: contiguous chunks (``disjoint``) or random distinct subsets of
    size ``in_dim // n_modules`` (``random``, drawn from ``generator``)."""
    if n_modules < 1:
        raise ConfigError(f"model.options.n_modules: {n_modules} must be >= 1")
    if receptive == "disjoint":
        if in_dim < n_modules:
            raise ConfigError(f"model.options.n_modules: {n_modules} disjoint modules need >= {n_modules} inputs, "
                              f"got {in_dim}")
        return list(torch.tensor_split(torch.arange(in_dim), n_modules))
    if receptive != "random":
        raise ConfigError(f"model.options.receptive: {receptive!r} is not 'disjoint' or 'random'")
    size = max(1, in_dim // n_modules)
    if math.comb(in_dim, size) < n_modules:
        raise ConfigError(f"model.options.n_modules: too many modules for distinct subsets of {in_dim} inputs")
    fields, seen = [], set()
    while len(fields) < n_modules:
        idx = torch.sort(torch.randperm(in_dim, generator=generator)[:size]).values
        key = tuple(idx.tolist())
        if key not in seen:
            seen.add(key)
            fields.append(idx)
    return fields


class ModularMLP(nn.Sequential):
    """``flatten, fc1, act1, …, fc{depth}, act{depth}, head`` with modular structure in masks (buffers)."""

    def __init__(self, in_dim: int, out_dim: int, n_modules: int = 8, module_width: int = 8, depth: int = 2,
                 receptive: str = "disjoint", activation: str = "relu", structure_seed: int = 0) -> None:
        from dicelab.seeding import generator as make

        if depth < 1 or module_width < 1:
            raise ConfigError("model.options.depth and module_width must be >= 1")
        width = n_modules * module_width
        module_of = torch.arange(width) // module_width
        fields = receptive_fields(in_dim, n_modules, receptive, make(int(structure_seed), "model.mask"))
        first = torch.ones(width, in_dim, dtype=torch.bool)  # True = frozen at 0
        for m, idx in enumerate(fields):
            first[m * module_width:(m + 1) * module_width, idx] = False
        block = module_of[:, None] != module_of[None, :]
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        for i in range(1, depth + 1):
            layers[f"fc{i}"] = FrozenMaskLinear(in_dim if i == 1 else width, width, mask=first if i == 1 else block)
            layers[f"act{i}"] = make_activation(activation)
        layers["head"] = nn.Linear(width, out_dim)
        super().__init__(layers)
        self.n_modules, self.module_width, self.depth = n_modules, module_width, depth
        self.widths = (width,) * depth

    def sites(self) -> dict[str, list[str]]:
        return mlp_sites(self.depth)


def modular_mlp_factory(input_shape, num_classes, activation="relu", n_modules=8, module_width=8, depth=2,
                        receptive="disjoint", structure_seed=0, **unused) -> ModularMLP:
    """``model.name = "modular_mlp"``; options ``n_modules``, ``module_width``, ``depth``, ``receptive``,
    ``structure_seed`` (``model.widths`` does not apply)."""
    if unused:
        raise ConfigError(f"model.{next(iter(unused))}: not an option of model 'modular_mlp'")
    return ModularMLP(math.prod(input_shape), num_classes, int(n_modules), int(module_width), int(depth), receptive,
                      activation, int(structure_seed))
