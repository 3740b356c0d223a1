"""Standard regularisers for the memorization sweeps: dropout, label smoothing, input augmentation.

STAND-IN. These belong to the randomness catalog (``dicelab.randomness``, the ``[randomness]`` table of
spec 01: ``dropout``, ``label_smoothing``, ``input_noise``, ``flip``, ``translation``), which was not ready
when the sweeps were written. Everything the sweeps need from it is isolated here, behind one function,
:func:`regularizer_hook`; switching to the catalog means returning a config with ``randomness.<name>`` set
instead of this hook (see :func:`dicelab.memorization.experiments.variant`).

The semantics follow spec 01 (train only; each source draws from its own generator; the dropout mask is
per element and per forward, ``y = x ⊙ m/(1−p)``; label smoothing returns soft targets
``(1−ε)·onehot + ε/K`` for L_class only, never for the random labels; augmentation changes inputs only,
so the random labels stay keyed by dataset index).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dicelab.errors import ConfigError
from dicelab.hooks import Hook, StepState
from dicelab.seeding import SeedBank

__all__ = ["StandInRegularizers", "regularizer_hook", "parse_augment", "AUGMENTS"]

AUGMENTS = ("none", "input_noise", "flip", "translation")


def parse_augment(text: str) -> tuple[str, float]:
    """``"input_noise:0.5"`` → ("input_noise", 0.5); ``"none"`` → ("none", 0); ``"flip"`` → ("flip", 1)."""
    name, _, raw = text.partition(":")
    name = name.strip()
    if name not in AUGMENTS:
        raise ConfigError(f"--augment: unknown technique {name!r} (known: {', '.join(AUGMENTS)})")
    if name == "none":
        return name, 0.0
    try:
        value = float(raw) if raw else 1.0
    except ValueError:
        raise ConfigError(f"--augment: {text!r} needs technique:number") from None
    if value < 0:
        raise ConfigError(f"--augment: {text!r} must be >= 0")
    return name, value


class StandInRegularizers(Hook):
    """Dropout after the model's ``dropout`` sites, label smoothing and input augmentation (train only)."""

    def __init__(self, seeds: SeedBank, *, dropout: float = 0.0, label_smoothing: float = 0.0,
                 augment: str = "none", num_classes: int = 10, device: torch.device | str = "cpu") -> None:
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout: {dropout} outside [0, 1)")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ConfigError(f"label_smoothing: {label_smoothing} outside [0, 1]")
        self.p, self.eps, self.num_classes = dropout, label_smoothing, num_classes
        self.augment, self.strength = parse_augment(augment)
        self.gens = {name: seeds.generator(f"memorization.standin.{name}", device)
                     for name in ("dropout", "augment")}
        self._handles: list[Any] = []

    def wrap_model(self, model: nn.Module) -> nn.Module:
        if self.p > 0:
            from dicelab.memorization.heads import module_names
            from dicelab.models import model_sites

            sites = model_sites(model)["dropout"]
            if not sites:
                raise ConfigError("dropout: the model has no dropout sites")
            modules = module_names(model)
            for name in sites:
                self._handles.append(modules[name].register_forward_hook(self._dropout))
        return model

    def _dropout(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        if not module.training:
            return None   # eval mode is the plain model
        keep = torch.empty_like(out).bernoulli_(1.0 - self.p, generator=self.gens["dropout"])
        return out * keep / (1.0 - self.p)

    def on_batch(self, x: torch.Tensor, y: torch.Tensor, state: StepState) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gens["augment"]
        if self.augment == "input_noise" and self.strength > 0:
            x = x + self.strength * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        elif self.augment == "flip":
            if x.dim() != 4:
                raise ConfigError("--augment flip needs image inputs (N, C, H, W)")
            flip = torch.rand(x.shape[0], generator=g, device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        elif self.augment == "translation" and self.strength > 0:
            if x.dim() != 4:
                raise ConfigError("--augment translation needs image inputs (N, C, H, W)")
            # per-sample shift d ~ U(−f, f)·size, bilinear, zero outside (spec 01's translation)
            shift = (torch.rand(x.shape[0], 2, generator=g, device=x.device) * 2 - 1) * self.strength * 2
            theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=x.dtype)
            theta[:, 0, 0] = theta[:, 1, 1] = 1.0
            theta[:, :, 2] = -shift.to(x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.eps > 0:
            q = F.one_hot(y, self.num_classes).to(x.dtype if x.is_floating_point() else torch.float32)
            y = (1.0 - self.eps) * q + self.eps / self.num_classes
        return x, y

    def state_dict(self) -> dict[str, Any]:
        return {name: g.get_state() for name, g in self.gens.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, g in self.gens.items():
            g.set_state(state[name])


def regularizer_hook(axis: str, value: float | str, seeds: SeedBank, num_classes: int,
                     device: torch.device | str = "cpu") -> Hook | None:
    """The stand-in hook for one sweep setting, or None when ``axis`` needs none (λ, weight decay)."""
    if axis == "dropout":
        return StandInRegularizers(seeds, dropout=float(value), num_classes=num_classes, device=device) if float(value) else None
    if axis == "label_smoothing":
        return (StandInRegularizers(seeds, label_smoothing=float(value), num_classes=num_classes, device=device)
                if float(value) else None)
    if axis == "augment":
        name, _ = parse_augment(str(value))
        return None if name == "none" else StandInRegularizers(seeds, augment=str(value), num_classes=num_classes,
                                                               device=device)
    return None
