"""Small helpers shared by the symmetry modules: data arguments, spec lookup, tap capture, evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dicelab.data import DataBundle, Split
from dicelab.symmetry.errors import SymmetryError
from dicelab.symmetry.spec import PermSpec, Tap

__all__ = ["as_inputs", "as_splits", "spec_for", "capture_taps", "evaluate_split", "tap_matrix"]


def as_inputs(data: Any) -> torch.Tensor:
    """The training inputs of ``data`` (a tensor, a Split, a DataBundle or a dict with ``train``)."""
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, Split):
        return data.x
    if isinstance(data, DataBundle):
        return data.train.x
    if isinstance(data, Mapping) and "train" in data:
        return as_inputs(data["train"])
    if isinstance(data, tuple | list) and data and isinstance(data[0], torch.Tensor):
        return data[0]
    raise SymmetryError(f"expected input data (tensor, Split or DataBundle), got {type(data).__name__}")


def as_splits(data: Any) -> dict[str, Split]:
    """Named evaluation splits: ``train`` and ``test`` of a DataBundle, a dict of Splits, a (train, test)
    pair, or a single Split (``train``)."""
    if isinstance(data, DataBundle):
        out = {"train": data.train}
        if len(data.test):
            out["test"] = data.test
        return out
    if isinstance(data, Split):
        return {"train": data}
    if isinstance(data, Mapping):
        return {k: v for k, v in data.items() if isinstance(v, Split)}
    if isinstance(data, tuple | list) and all(isinstance(s, Split) for s in data):
        return dict(zip(("train", "test"), data, strict=False))
    raise SymmetryError(f"expected a DataBundle, Split or dict of Splits, got {type(data).__name__}")


def spec_for(model: nn.Module, spec: PermSpec | None, example_input: Any = None) -> PermSpec:
    """``spec`` if given, else the spec traced from ``model``."""
    return spec if spec is not None else PermSpec.from_module(model, example_input)


def tap_matrix(value: torch.Tensor, tap: Tap, n: int) -> torch.Tensor:
    """A tap's tensor as (samples, n): the feature axis last, every other axis folded into samples."""
    v = value.detach()
    fdim = tap.fdim % v.dim()
    v = v.movedim(fdim, -1)
    if tap.block != 1:
        v = v.reshape(*v.shape[:-1], n, tap.block).movedim(-1, -2)
    return v.reshape(-1, n)


def capture_taps(model: nn.Module, spec: PermSpec, x: torch.Tensor, batch: int = 512) -> dict[str, list[torch.Tensor]]:
    """Per group, the (samples, n) post-activation matrices read at every tap, in eval mode.

    Grad mode stays on so that fused fast paths (``TransformerEncoderLayer`` in eval) call their
    submodules and the hooks fire; values are detached."""
    sizes = {g.name: g.n for g in spec.groups}
    out: dict[str, list[list[torch.Tensor]]] = {}
    handles = []
    for i, tap in enumerate(spec.taps):
        mod = model.get_submodule(tap.module)

        def hook(_m, args, _tap=tap, _i=i):
            out.setdefault(_tap.group, {}).setdefault(_i, []).append(tap_matrix(args[0], _tap, sizes[_tap.group]))

        handles.append(mod.register_forward_pre_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for s in range(0, len(x), batch):
                model(x[s:s + batch])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {g: [torch.cat(chunks) for chunks in per_tap.values()] for g, per_tap in out.items()}


@torch.no_grad()
def evaluate_split(model: nn.Module, split: Split, loss_fn: Any = None, batch: int = 1024) -> tuple[float, float]:
    """(mean loss, error = 1 − accuracy) of ``model`` in eval mode; ``loss_fn(logits, y)`` gives per-sample
    losses (default cross-entropy)."""
    was = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    total, wrong = 0.0, 0
    for s in range(0, len(split), batch):
        x, y = split.x[s:s + batch], split.y[s:s + batch]
        logits = model(x.to(dtype) if x.is_floating_point() else x)
        if loss_fn is None:
            total += float(F.cross_entropy(logits, y, reduction="sum"))
        else:
            total += float(loss_fn(logits, y).sum())
        if logits.dim() == 2 and logits.shape[1] > 1:
            wrong += int((logits.argmax(dim=1) != y).sum())
    model.train(was)
    return total / len(split), wrong / len(split)
