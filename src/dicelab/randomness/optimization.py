"""Optimization-level techniques (spec 01 §4, paper indices 14-21): which optimizer, how the step size and
batch size move, and the noise and masks applied around each step."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from dicelab.errors import ConfigError
from dicelab.randomness._targets import TARGETS, TargetBuffer, keep_mask, select_targets
from dicelab.randomness.base import Knob, Level, Technique

__all__ = ["OptimizerChoice", "LearningRate", "LrSchedule", "BatchSize", "BatchSchedule", "WeightNoise",
           "GradientNoise", "GradientDropout", "schedule_period", "rescale_schedule", "annealed_sigma",
           "PAPER_ADAM_EPS"]

_INF = math.inf
PAPER_ADAM_EPS = 1e-7   # the Keras default the reference code's Adam used


def schedule_period(s: float, epochs: int) -> int:
    """P = floor((1−|s|)·E + 1 + 1e-9): the epochs between doublings/halvings (s = 0 gives E+1: never)."""
    return math.floor((1.0 - abs(s)) * epochs + 1.0 + 1e-9)


def rescale_schedule(s: float, e_from: int, e_to: int) -> float:
    """The ``s`` that keeps a schedule's period (in epochs) when a setting tuned for ``e_from`` epochs is
    trained for ``e_to`` (the reference protocol retrains 20-epoch settings for 50/100 epochs)."""
    if s == 0:
        return 0.0
    r = e_from / e_to
    return math.copysign(abs(s) * r + 1.0 - r, s)


def annealed_sigma(eta: float, t: int, gamma: float = 0.55) -> float:
    """σ_t = sqrt(η/(t+1)^γ) (Neelakantan et al., arXiv 1511.06807)."""
    return math.sqrt(eta / (t + 1) ** gamma)


_TARGETS_KNOB = Knob("targets", "choice", off="all", choices=TARGETS, search=False,
                     help="all trainable tensors, or only the weights at connect sites")
_GAMMA_KNOB = Knob("gamma", "float", off=0.55, domain=(0.0, _INF), search=False, help="annealing exponent")


class OptimizerChoice(Technique):
    name = "optimizer"
    level = Level.OPTIMIZATION
    knobs = (Knob("name", "choice", off=None, low=0, high=3, choices=("sgd", "momentum", "adam"),
                  help="override train.optimizer (None inherits)"),)
    hooks = frozenset({"configure"})
    paper_index, paper_group = 14, "optimization"
    summary = "which optimizer (sgd, momentum 0.9, adam)"

    def configure(self, train):
        choice = self.value
        if choice == train.optimizer:
            return train
        options = {}
        if choice == "adam" and self.context.preset == "paper":
            options["eps"] = PAPER_ADAM_EPS
        # Options and momentum of the replaced optimizer may not apply to the new one.
        return train.model_copy(update={"optimizer": choice, "momentum": None, "optimizer_options": options})


class LearningRate(Technique):
    name = "lr"
    level = Level.OPTIMIZATION
    knobs = (Knob("value", "float", off=None, low=1e-5, high=1e-1, scale="log", domain=(1e-12, _INF),
                  help="override train.lr (None inherits)"),)
    hooks = frozenset({"configure"})
    paper_index, paper_group, paper_column = 15, "optimization", "lr_exponent"
    summary = "the learning rate (log scale)"

    def configure(self, train):
        return train.model_copy(update={"lr": float(self.value)})


class BatchSize(Technique):
    name = "batch_size"
    level = Level.OPTIMIZATION
    knobs = (Knob("value", "int", off=None, low=128, high=1024, domain=(1, _INF),
                  help="override train.batch_size (None inherits)"),)
    hooks = frozenset({"configure"})
    paper_index, paper_group = 17, "optimization"
    summary = "the batch size"

    def configure(self, train):
        return train.model_copy(update={"batch_size": int(self.value)})


class LrSchedule(Technique):
    name = "lr_schedule"
    level = Level.OPTIMIZATION
    knobs = (
        Knob("s", "float", off=0.0, low=-1.0, high=1.0, domain=(-1.0, 1.0),
             help="every P = floor((1−|s|)·E + 1) epochs, double (s > 0) or halve (s < 0) the lr"),
        Knob("lr_min", "float", off=1e-5, domain=(0.0, _INF), search=False),
        Knob("lr_max", "float", off=0.1, domain=(0.0, _INF), search=False),
    )
    hooks = frozenset({"configure", "on_epoch"})
    paper_index, paper_group = 16, "optimization"
    summary = "double or halve the lr every P epochs"

    def configure(self, train):
        if train.scheduler != "constant":
            raise ConfigError(f"randomness.lr_schedule and train.scheduler = {train.scheduler!r}: use one "
                              "learning-rate schedule, not both")
        return train

    def on_epoch(self, state, plan) -> None:
        s, e = float(self.value), state.epoch
        if e >= 1 and e % schedule_period(s, state.epochs) == 0:
            lr = 2.0 * plan.lr if s > 0 else plan.lr / 2.0
            plan.lr = min(max(lr, self.values["lr_min"]), self.values["lr_max"])


class BatchSchedule(Technique):
    name = "batch_schedule"
    level = Level.OPTIMIZATION
    knobs = (
        Knob("s", "float", off=0.0, low=-1.0, high=1.0, domain=(-1.0, 1.0),
             help="every P epochs, double (s > 0) or halve (s < 0) the batch size"),
        Knob("b_min", "int", off=None, nullable=True, domain=(1, _INF), search=False,
             help="None: min(b0, 128)"),
        Knob("b_max", "int", off=None, nullable=True, domain=(1, _INF), search=False,
             help="None: max(b0, 1024)"),
    )
    hooks = frozenset({"on_epoch"})
    paper_index, paper_group = 18, "optimization"
    summary = "double or halve the batch size every P epochs"

    def on_epoch(self, state, plan) -> None:
        s, e = float(self.value), state.epoch
        if e >= 1 and e % schedule_period(s, state.epochs) == 0:
            b0 = self.context.base_batch_size
            lo = self.values["b_min"] if self.values["b_min"] is not None else min(b0, 128)
            hi = self.values["b_max"] if self.values["b_max"] is not None else max(b0, 1024)
            b = 2 * plan.batch_size if s > 0 else plan.batch_size // 2
            plan.batch_size = int(min(max(b, lo), hi))


class _TargetedNoise(Technique):
    """Shared by the techniques that draw one number per targeted tensor entry per step."""

    def bind(self, params):
        self.targets = select_targets(self.context.model, params, self.context.sites or {}, self.values["targets"],
                                      self.name)
        self.buffer = TargetBuffer(self.targets)

    def sigma(self, t: int) -> float:
        return annealed_sigma(float(self.value), t, float(self.values["gamma"]))


class WeightNoiseSample(nn.Module):
    """Parametrization ``w ↦ w + σ_t·ε`` for forward-mode weight noise: drawn per access, never stored."""

    def __init__(self, technique: WeightNoise) -> None:
        super().__init__()
        self.technique = [technique]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return w
        t = self.technique[0]
        eps = torch.randn(w.shape, generator=t.generator, device=w.device, dtype=w.dtype)
        return w + t.sigma(t.t) * eps


class WeightNoise(_TargetedNoise):
    name = "weight_noise"
    level = Level.OPTIMIZATION
    knobs = (
        Knob("eta", "float", off=0.0, low=1e-5, high=1e-1, scale="log", domain=(0.0, _INF),
             help="σ_t = sqrt(η/(t+1)^γ)"),
        Knob("mode", "choice", off="permanent", choices=("permanent", "forward"), search=False,
             help="permanent: w ← w + σ_t·ε before each step (a random walk); forward: redrawn each forward"),
        _GAMMA_KNOB,
        _TARGETS_KNOB,
    )
    hooks = frozenset({"wrap_model", "on_batch", "before_step"})
    paper_index, paper_group, paper_column = 19, "optimization", "weight_noise_exponent"
    summary = "annealed Gaussian noise added to the weights"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.t = 0

    def uses(self, point: str) -> bool:
        forward = self.values["mode"] == "forward"
        return point in (("wrap_model", "on_batch") if forward else ("before_step",))

    def bind(self, params):
        if self.values["mode"] == "permanent":
            super().bind(params)

    def wrap_model(self, model):
        targets = select_targets(model, list(model.parameters()), self.context.sites or {}, self.values["targets"],
                                 self.name)
        wanted = {id(p) for p in targets}
        for module in list(model.modules()):
            for pname, p in list(module.named_parameters(recurse=False)):
                if id(p) in wanted:
                    parametrize.register_parametrization(module, pname, WeightNoiseSample(self), unsafe=True)
            if hasattr(module, "parametrizations"):  # weights already parametrized (DropConnect): add on top
                for pname, plist in module.parametrizations.items():
                    if id(plist.original) in wanted and not any(isinstance(q, WeightNoiseSample) for q in plist):
                        parametrize.register_parametrization(module, pname, WeightNoiseSample(self), unsafe=True)
        return model

    def on_batch(self, x, y, state):
        self.t = state.step   # the forward pass that follows uses σ_t of this step
        return x, y

    @torch.no_grad()
    def before_step(self, params, state):
        sigma = self.sigma(state.step)
        noise = self.buffer.normal(generator=self.generator)
        if self.trace is not None:
            self._record("delta", self.buffer.flat * sigma)
        torch._foreach_add_(self.buffer.tensors, noise, alpha=sigma)


class GradientNoise(_TargetedNoise):
    name = "gradient_noise"
    level = Level.OPTIMIZATION
    knobs = (
        Knob("eta", "float", off=0.0, low=0.0, high=1.0, domain=(0.0, _INF),
             help="g ← g + σ_t·ε, σ_t = sqrt(η/(t+1)^γ)"),
        _GAMMA_KNOB,
        _TARGETS_KNOB,
    )
    hooks = frozenset({"on_grads"})
    paper_index, paper_group = 20, "optimization"
    summary = "annealed Gaussian noise added to the gradients"

    @torch.no_grad()
    def on_grads(self, params, state):
        sigma = self.sigma(state.step)
        self.buffer.normal(generator=self.generator)
        grads, views = self.buffer.grads()
        torch._foreach_add_(grads, views, alpha=sigma)


class GradientDropout(_TargetedNoise):
    name = "gradient_dropout"
    level = Level.OPTIMIZATION
    knobs = (
        Knob("p", "float", off=0.0, low=0.0, high=0.5, domain=(0.0, 1.0), open_high=True,
             help="g ← g ⊙ M, M ~ Bernoulli(1−p) per entry and step"),
        Knob("rescale", "bool", off=False, search=False, help="divide kept entries by 1−p (unbiased)"),
        _TARGETS_KNOB,
    )
    hooks = frozenset({"on_grads"})
    paper_index, paper_group = 21, "optimization"
    summary = "random zeroing of gradient entries (new in 2404.03992)"

    @torch.no_grad()
    def on_grads(self, params, state):
        p = float(self.value)
        flat = self.buffer.flat
        keep_mask(flat.shape, p, self.generator, flat.device, flat.dtype,
                  1.0 / (1.0 - p) if self.values["rescale"] else 1.0, out=flat)
        self._record("mask", flat)
        grads, views = self.buffer.grads()
        torch._foreach_mul_(grads, views)
