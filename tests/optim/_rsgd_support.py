"""Helpers for the R-SGD tests: the teacher-student student on real minibatches."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dicelab.optim.bench import TASKS, init_model

TS = TASKS["teacher-student"]


def student(data, seed: int = 0) -> torch.nn.Module:
    return init_model(TS, data, seed)


def train_steps(model: torch.nn.Module, make: Callable, data, steps: int, start: int = 0,
                optimizer: torch.optim.Optimizer | None = None) -> torch.optim.Optimizer:
    """``steps`` optimizer steps on consecutive minibatches of 32 (batch k = samples 32k..32k+31)."""
    opt = optimizer if optimizer is not None else make(model.parameters())
    n = len(data.train)
    for s in range(start, start + steps):
        lo = (s * 32) % (n - 32)
        x, y = data.train.x[lo:lo + 32], data.train.y[lo:lo + 32]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return opt


def params_of(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
