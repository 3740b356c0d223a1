"""Learning-level technique (spec 01 §4, paper index 11): randomized networks (DRNN), in which a random
fraction of the weights is frozen at its initial value for the whole run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dicelab.randomness._targets import TARGETS, select_targets
from dicelab.randomness.base import Knob, Level, Technique

__all__ = ["Drnn"]


class Drnn(Technique):
    name = "drnn"
    level = Level.LEARNING
    knobs = (
        Knob("fraction", "float", off=0.0, low=0.0, high=1.0, domain=(0.0, 1.0),
             help="share of entries frozen at their initial value (mask drawn once)"),
        Knob("mode", "choice", off="strict", choices=("strict", "paper"), search=False, paper="paper",
             help="strict: frozen entries are restored after every step; paper: only gradients are masked"),
        Knob("targets", "choice", off="all", choices=TARGETS, search=False),
    )
    hooks = frozenset({"wrap_model", "on_grads", "after_step"})
    paper_index, paper_group = 11, "network"
    summary = "freeze a random fraction of the weights at init (randomized networks)"

    def uses(self, point: str) -> bool:
        if point == "after_step":
            return self.values["mode"] == "strict"
        return point in ("on_grads",)

    @torch.no_grad()
    def bind(self, params):
        self.targets = select_targets(self.context.model, params, self.context.sites or {}, self.values["targets"],
                                      self.name)
        f = float(self.value)
        # M = U > f: 1 where the entry trains, 0 where it is frozen.
        self.masks = [torch.rand(p.shape, generator=self.generator, device=p.device, dtype=p.dtype).gt_(f)
                      for p in self.targets]
        # The frozen part of the initial weights, (1 − M)·w0: one copy of the targeted tensors.
        self.frozen = [p.detach() * (1 - m) for p, m in zip(self.targets, self.masks, strict=True)]

    @torch.no_grad()
    def on_grads(self, params, state):
        pairs = [(p.grad, m) for p, m in zip(self.targets, self.masks, strict=True) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])

    @torch.no_grad()
    def after_step(self, params, state):
        # w ← M·w + (1 − M)·w0, exact for both parts since M is 0 or 1.
        torch._foreach_mul_(self.targets, self.masks)
        torch._foreach_add_(self.targets, self.frozen)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "masks": [m.clone() for m in self.masks],
                "frozen": [f.clone() for f in self.frozen]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        for dst, src in zip(self.masks, state["masks"], strict=True):
            dst.copy_(src)
        for dst, src in zip(self.frozen, state["frozen"], strict=True):
            dst.copy_(src)
