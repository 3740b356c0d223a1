"""Data-level techniques (spec 01 §4, paper indices 0-7): the order of the data and what each sample looks like."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from dicelab.randomness import augment
from dicelab.randomness.base import Knob, Level, Technique

__all__ = ["Shuffle", "Flip", "Rotation", "Zoom", "Translation", "Contrast", "InputNoise", "LabelSmoothing",
           "AffineTechnique", "window_shuffle"]

_INF = math.inf


def window_shuffle(n: int, buffer: int, generator: torch.Generator) -> torch.Tensor:
    """The order a streaming shuffle buffer of ``buffer`` slots gives (tf.data's ``shuffle``): fill the buffer,
    repeatedly emit a uniformly chosen slot and refill it from the stream, then drain the rest randomly."""
    size = min(buffer, n)
    slots = np.arange(size)
    picks = torch.randint(0, size, (max(n - size, 0),), generator=generator).numpy()
    out = np.empty(n, dtype=np.int64)
    for k, (pick, incoming) in enumerate(zip(picks, range(size, n), strict=True)):
        out[k] = slots[pick]
        slots[pick] = incoming
    drain = torch.randperm(size, generator=generator).numpy()
    out[n - size:] = slots[drain]
    return torch.from_numpy(out)


class Shuffle(Technique):
    """A fresh order of the training data every epoch."""

    name = "shuffle"
    level = Level.DATA
    knobs = (
        Knob("on", "bool", off=False, low=0, high=1, help="reshuffle every epoch"),
        Knob("mode", "choice", off="full", choices=("full", "window"), search=False, paper="window",
             help="full permutation, or the reference 1024-slot streaming window"),
        Knob("buffer", "int", off=1024, domain=(1, _INF), search=False, help="window size (mode = window)"),
    )
    hooks = frozenset({"on_epoch"})
    paper_index, paper_group = 0, "data"
    summary = "new random order of the training set each epoch"

    def on_epoch(self, state, plan) -> None:
        n = self.context.num_train
        if self.values["mode"] == "full":
            plan.order = torch.randperm(n, generator=self.generator, device=self.generator.device)
        else:
            plan.order = window_shuffle(n, int(self.values["buffer"]), self.generator)
        self._record("order", plan.order)


class Flip(Technique):
    name = "flip"
    level = Level.DATA
    knobs = (Knob("mode", "choice", off="none", low=0, high=4,
                  choices=("none", "horizontal_and_vertical", "horizontal", "vertical"),
                  help="axes that may flip, each with probability 1/2"),)
    hooks = frozenset({"on_batch"})
    paper_index, paper_group = 1, "data"
    needs_images = True
    summary = "random horizontal / vertical flips, per sample"

    def on_batch(self, x, y, state):
        flips = augment.draw_flip(x.shape[0], self.value, self.generator, x.device, per=self.context.per)
        self._record("flips", flips)
        return augment.apply_flip(x, flips), y


def _factor_knob(help: str, domain_high: float = 1.0, open_high: bool = False) -> Knob:
    return Knob("factor", "float", off=0.0, low=0.0, high=0.2, domain=(0.0, domain_high), open_high=open_high,
                help=help)


class AffineTechnique(Technique):
    """Rotation, zoom and translation draw their parameters separately (each from its own generator) and are
    applied together: one fused resampling pass (or one per transform with ``augment.resample = "sequential"``)."""

    hooks = frozenset({"on_batch"})
    needs_images = True
    part: ClassVar[str]                      # apply_affine's argument: theta, zoom or translation
    draw_params: ClassVar[Callable[..., torch.Tensor]]

    def draw(self, n: int, device: torch.device) -> torch.Tensor:
        params = type(self).draw_params(n, self.value, self.generator, device, per=self.context.per)
        self._record(self.part, params)
        return params

    def on_batch(self, x, y, state):  # used when called alone (e.g. a preview); the set fuses the three
        params = self.draw(x.shape[0], x.device)
        return augment.apply_affine(x, **{self.part: params}, resample=self.context.resample,
                                    padding=self.context.padding), y


class Rotation(AffineTechnique):
    name = "rotation"
    level = Level.DATA
    knobs = (_factor_knob("θ ~ U(−2π·factor, 2π·factor)"),)
    paper_index, paper_group = 2, "data"
    part, draw_params = "theta", staticmethod(augment.draw_rotation)
    summary = "random rotation, per sample"


class Zoom(AffineTechnique):
    name = "zoom"
    level = Level.DATA
    knobs = (_factor_knob("s_h, s_w ~ U(1−factor, 1+factor); s > 1 zooms out", open_high=True),)
    paper_index, paper_group = 3, "data"
    part, draw_params = "zoom", staticmethod(augment.draw_zoom)
    summary = "random zoom, per sample and axis"


class Translation(AffineTechnique):
    name = "translation"
    level = Level.DATA
    knobs = (_factor_knob("shift ~ U(−factor, factor) of the height / width"),)
    paper_index, paper_group = 4, "data"
    part, draw_params = "translation", staticmethod(augment.draw_translation)
    summary = "random shift, per sample and axis"


class Contrast(Technique):
    name = "contrast"
    level = Level.DATA
    knobs = (_factor_knob("c ~ U(1−factor, 1+factor); y = (x − μ)·c + μ"),)
    hooks = frozenset({"on_batch"})
    paper_index, paper_group = 5, "data"
    needs_images = True
    summary = "random contrast around each image's mean, per sample"

    def on_batch(self, x, y, state):
        c = augment.draw_contrast(x.shape[0], self.value, self.generator, x.device, per=self.context.per)
        self._record("contrast", c)
        return augment.apply_contrast(x, c), y


class InputNoise(Technique):
    name = "input_noise"
    level = Level.DATA
    knobs = (Knob("sigma", "float", off=0.0, low=0.0, high=1.0, domain=(0.0, _INF), help="x ← x + σ·ε"),)
    hooks = frozenset({"on_batch"})
    paper_index, paper_group = 6, "data"
    summary = "Gaussian noise added to every input element"

    def on_batch(self, x, y, state):
        noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        self._record("noise", noise)
        return x + self.value * noise, y


class LabelSmoothing(Technique):
    name = "label_smoothing"
    level = Level.DATA
    knobs = (Knob("eps", "float", off=0.0, low=0.0, high=1.0, domain=(0.0, 1.0),
                  help="targets (1−ε)·onehot + ε/K"),)
    hooks = frozenset({"on_batch"})
    paper_index, paper_group = 7, "data"
    summary = "soft targets (1−ε)·onehot(y) + ε/K (deterministic)"

    def on_batch(self, x, y, state):
        if y.dim() == 2:  # already soft (another hook made them): smooth the distribution itself
            q = y
        else:
            q = torch.nn.functional.one_hot(y, self.context.num_classes).to(x.dtype)
        eps = self.value
        k = q.shape[1]
        return x, q * (1.0 - eps) + eps / k
