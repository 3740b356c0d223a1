"""The engine's hook points (the order of operations of spec 01 §3).

A hook object subclasses :class:`Hook` and overrides only the methods it needs; the engine calls a
method only on the hooks that override it, so an unused hook point costs nothing per step.

========================  ===========================================  =====================================
method                    when                                         effect
========================  ===========================================  =====================================
``configure(train)``      once, before the model is built              returns a (possibly changed) TrainConfig
``wrap_model(model)``     once, after init, before the optimizer       returns the module to train
``attach(optimizer)``     once, after the optimizer is built           e.g. register optimizer step hooks
``on_epoch(state, plan)``  start of each epoch                         may set ``plan.lr/batch_size/order``
``on_batch(x, y, state)`` each training batch, before forward          returns ``(x, target)``; target may be soft
``on_loss(l, state)``     per-sample loss, before reduction            returns the per-sample loss to reduce
``on_grads(params, s)``   after backward, before clipping/step         edits ``.grad`` in place
``before_step(params,s)`` right before ``optimizer.step()``
``after_step(params, s)`` right after it (``state.step`` already +1)
``on_epoch_end(s, m)``    after evaluation                             may add entries to the metrics dict ``m``
                                                                       (``m['stop'] = (status, reason)`` ends the run)
``unwrap(model)``         before saving                                returns the plain module
========================  ===========================================  =====================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from dicelab.config import TrainConfig

__all__ = ["StepState", "EpochPlan", "Hook", "HookList", "HOOK_POINTS"]

HOOK_POINTS = ("configure", "wrap_model", "attach", "on_epoch", "on_batch", "on_loss", "on_grads",
               "before_step", "after_step", "on_epoch_end", "unwrap")


@dataclass(slots=True)
class StepState:
    """Where training is. ``step`` counts the optimizer steps completed before the current one
    (across epochs, restored on resume)."""

    epoch: int
    epochs: int
    step: int
    batch_size: int
    lr: float


@dataclass(slots=True)
class EpochPlan:
    """What the coming epoch uses; ``on_epoch`` hooks may change it. ``order=None`` means the engine's
    own order (a fresh permutation when ``train.shuffle``, else 0..N-1)."""

    lr: float
    batch_size: int
    order: torch.Tensor | None = None


class Hook:
    """Base class of everything that plugs into the training loop. Every method is a no-op."""

    def configure(self, train: TrainConfig) -> TrainConfig:
        return train

    def wrap_model(self, model: nn.Module) -> nn.Module:
        return model

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        pass

    def on_epoch(self, state: StepState, plan: EpochPlan) -> None:
        pass

    def on_batch(self, x: torch.Tensor, y: torch.Tensor, state: StepState) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def on_loss(self, per_sample: torch.Tensor, state: StepState) -> torch.Tensor:
        return per_sample

    def on_grads(self, params: Sequence[nn.Parameter], state: StepState) -> None:
        pass

    def before_step(self, params: Sequence[nn.Parameter], state: StepState) -> None:
        pass

    def after_step(self, params: Sequence[nn.Parameter], state: StepState) -> None:
        pass

    def on_epoch_end(self, state: StepState, metrics: dict[str, Any]) -> None:
        pass

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    def uses(self, point: str) -> bool:
        """Whether the engine should call ``point`` on this hook: by default, whether the class overrides it.
        A hook that bundles several (a technique set) answers per instance, so unused points stay free."""
        return getattr(type(self), point) is not getattr(Hook, point)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (generator states, counters, masks); tensors and plain types only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class HookList:
    """The hooks of one run, each hook point holding only the hooks that override it."""

    def __init__(self, hooks: Sequence[Hook] = ()) -> None:
        self.hooks = list(hooks)
        self.by_point: dict[str, list[Hook]] = {
            point: [h for h in self.hooks if h.uses(point)] for point in HOOK_POINTS
        }

    def active(self, point: str) -> bool:
        return bool(self.by_point[point])

    def configure(self, train: TrainConfig) -> TrainConfig:
        for h in self.by_point["configure"]:
            train = h.configure(train)
        return train

    def wrap_model(self, model: nn.Module) -> nn.Module:
        for h in self.by_point["wrap_model"]:
            model = h.wrap_model(model)
        return model

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        for h in self.by_point["attach"]:
            h.attach(optimizer)

    def on_epoch(self, state: StepState, plan: EpochPlan) -> None:
        for h in self.by_point["on_epoch"]:
            h.on_epoch(state, plan)

    def on_batch(self, x, y, state):
        for h in self.by_point["on_batch"]:
            x, y = h.on_batch(x, y, state)
        return x, y

    def on_loss(self, per_sample, state):
        for h in self.by_point["on_loss"]:
            per_sample = h.on_loss(per_sample, state)
        return per_sample

    def on_grads(self, params, state) -> None:
        for h in self.by_point["on_grads"]:
            h.on_grads(params, state)

    def before_step(self, params, state) -> None:
        for h in self.by_point["before_step"]:
            h.before_step(params, state)

    def after_step(self, params, state) -> None:
        for h in self.by_point["after_step"]:
            h.after_step(params, state)

    def on_epoch_end(self, state, metrics) -> None:
        for h in self.by_point["on_epoch_end"]:
            h.on_epoch_end(state, metrics)

    def unwrap(self, model: nn.Module) -> nn.Module:
        for h in reversed(self.by_point["unwrap"]):
            model = h.unwrap(model)
        return model

    def state_dict(self) -> list[dict[str, Any]]:
        return [h.state_dict() for h in self.hooks]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        if len(states) != len(self.hooks):
            raise ValueError(f"checkpoint holds state for {len(states)} hooks, this run has {len(self.hooks)}")
        for h, s in zip(self.hooks, states, strict=True):
            h.load_state_dict(s)
