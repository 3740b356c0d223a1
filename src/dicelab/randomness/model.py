"""Model-level techniques (spec 01 §4, paper indices 8-10, 12, 13): what the network computes in training.

Dropout, activation noise and input-mode DropConnect are forward hooks on the sites the model names, so the
module tree and its ``state_dict`` keys stay those of the plain model; weight-mode DropConnect is a
``torch.nn.utils.parametrize`` parametrization (gradients reach ``parametrizations.weight.original``).
Everything checks ``module.training``: in eval mode the model is exactly the plain one (R3).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from dicelab.errors import ConfigError
from dicelab.randomness._targets import keep_mask
from dicelab.randomness.base import Knob, Level, Technique

__all__ = ["WeightInit", "Dropout", "DropConnect", "ActivationNoise", "LossNoise", "DropConnectMask",
           "sites_of"]

_INF = math.inf
_CONNECT = (nn.Linear, nn.modules.conv._ConvNd)


def sites_of(technique: Technique, kind: str) -> list[nn.Module]:
    """The modules at the model's ``kind`` sites; a model without any is an error naming the technique."""
    names = (technique.context.sites or {}).get(kind, [])
    if not names:
        raise ConfigError(f"randomness.{technique.name}: the model has no {kind} sites to attach to")
    model = technique.context.model
    return [model.get_submodule(n) for n in names]


class WeightInit(Technique):
    name = "weight_init"
    level = Level.MODEL
    knobs = (Knob("std", "float", off=None, low=0.0, high=0.1, domain=(0.0, _INF),
                  help="every Conv/Linear weight ~ N(0, std²), biases 0; None keeps the model's init"),)
    hooks = frozenset({"wrap_model"})
    paper_index, paper_group, paper_column = 8, "network", "weight_init_std"
    summary = "Gaussian re-initialisation of every Conv/Linear weight"

    @torch.no_grad()
    def wrap_model(self, model):
        std = float(self.value)
        for _, module in model.named_modules():
            if isinstance(module, _CONNECT):
                w = module.weight
                if std > 0:
                    w.normal_(0.0, std, generator=self.generator)
                else:
                    w.zero_()
                if module.bias is not None:
                    module.bias.zero_()
        return model


class Dropout(Technique):
    name = "dropout"
    level = Level.MODEL
    knobs = (Knob("p", "float", off=0.0, low=0.0, high=0.5, domain=(0.0, 1.0), open_high=True,
                  help="y = x ⊙ m/(1−p), m ~ Bernoulli(1−p) per element and forward"),)
    hooks = frozenset({"wrap_model"})
    paper_index, paper_group = 9, "network"
    summary = "inverted dropout after hidden activations (own generator)"

    def wrap_model(self, model):
        self.p = float(self.value)
        self.scale = 1.0 / (1.0 - self.p)
        self.handles = [m.register_forward_hook(self._forward) for m in sites_of(self, "dropout")]
        return model

    def _forward(self, module, inputs, out):
        if not module.training:
            return out
        mask = keep_mask(out.shape, self.p, self.generator, out.device, out.dtype, self.scale)
        self._record("mask", mask)
        return out * mask


class DropConnectMask(nn.Module):
    """Parametrization ``W ↦ W ⊙ M/(1−p)``, one mask per access of the weight (= per forward pass)."""

    def __init__(self, technique: DropConnect) -> None:
        super().__init__()
        self.technique = [technique]   # in a list: not a submodule, and not copied with the model

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return weight
        t = self.technique[0]
        mask = keep_mask(weight.shape, t.p, t.generator, weight.device, weight.dtype, t.scale)
        t._record("mask", mask)
        return weight * mask


class DropConnect(Technique):
    name = "dropconnect"
    level = Level.MODEL
    knobs = (
        Knob("p", "float", off=0.0, low=0.0, high=0.5, domain=(0.0, 1.0), open_high=True,
             help="drop probability of each weight (or input, mode = input)"),
        Knob("mode", "choice", off="weights", choices=("weights", "input"), search=False, paper="input",
             help="mask weights (Wan et al. 2013) or the layer's inputs (reference code)"),
        Knob("rescale", "bool", off=True, search=False, help="weights mode: divide kept weights by 1−p"),
    )
    hooks = frozenset({"wrap_model"})
    paper_index, paper_group = 10, "network"
    summary = "Bernoulli masks on the weights of every Conv/Linear but the head"

    def wrap_model(self, model):
        self.p = float(self.value)
        modules = sites_of(self, "connect")
        if self.values["mode"] == "weights":
            self.scale = 1.0 / (1.0 - self.p) if self.values["rescale"] else 1.0
            for m in modules:
                parametrize.register_parametrization(m, "weight", DropConnectMask(self), unsafe=True)
        else:
            self.scale = 1.0
            self.handles = [m.register_forward_pre_hook(self._mask_input) for m in modules]
        return model

    def _mask_input(self, module, inputs):
        if not module.training:
            return None
        x = inputs[0]
        mask = keep_mask(x.shape, self.p, self.generator, x.device, x.dtype, 1.0)
        self._record("mask", mask)
        return (x * mask, *inputs[1:])


class ActivationNoise(Technique):
    name = "activation_noise"
    level = Level.MODEL
    knobs = (Knob("sigma", "float", off=0.0, low=0.0, high=0.1, domain=(0.0, _INF),
                  help="y = act(z + σ·ε) at every hidden activation"),)
    hooks = frozenset({"wrap_model"})
    paper_index, paper_group = 12, "network"
    summary = "Gaussian noise on every pre-activation"

    def wrap_model(self, model):
        self.sigma = float(self.value)
        self.handles = [m.register_forward_pre_hook(self._noise) for m in sites_of(self, "activation")]
        # The addition's backward needs neither operand, so one noise buffer per shape can be redrawn in place
        # every forward (no allocation, no page faults on large activations).
        self.buffers: dict[tuple, torch.Tensor] = {}
        return model

    def _noise(self, module, inputs):
        if not module.training:
            return None
        z = inputs[0]
        key = (tuple(z.shape), z.dtype, z.device)
        eps = self.buffers.get(key)
        if eps is None:
            eps = self.buffers[key] = torch.empty(z.shape, device=z.device, dtype=z.dtype)
        eps.normal_(generator=self.generator)
        self._record("noise", eps)
        return (torch.add(z, eps, alpha=self.sigma), *inputs[1:])


class LossNoise(Technique):
    name = "loss_noise"
    level = Level.MODEL
    knobs = (
        Knob("sigma", "float", off=0.0, low=0.0, high=1.0, domain=(0.0, _INF),
             help="l_i ← m_i·l_i, m_i ~ N(1, σ²) per sample and step"),
        Knob("clip_min", "float", off=None, nullable=True, domain=(-_INF, _INF), search=False,
             help="lower bound on m_i (0 forbids sign flips); None: unclipped, as in the paper"),
    )
    hooks = frozenset({"on_loss"})
    paper_index, paper_group = 13, "network"
    summary = "random per-sample multipliers of the loss (new in 2404.03992)"

    def on_loss(self, per_sample, state):
        m = torch.randn(per_sample.shape, generator=self.generator, device=per_sample.device,
                        dtype=per_sample.dtype)
        m.mul_(float(self.value)).add_(1.0)
        if self.values["clip_min"] is not None:
            m.clamp_(min=float(self.values["clip_min"]))
        self._record("multipliers", m)
        return per_sample * m
