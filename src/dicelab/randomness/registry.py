"""The catalog: the 22 techniques in paper-index order, and the fixed order in which each hook point runs them
(spec 01 §3; a config's key order never changes it)."""

from __future__ import annotations

from dicelab.randomness.base import Level, Technique
from dicelab.randomness.data import (
    Contrast,
    Flip,
    InputNoise,
    LabelSmoothing,
    Rotation,
    Shuffle,
    Translation,
    Zoom,
)
from dicelab.randomness.learning import Drnn
from dicelab.randomness.model import ActivationNoise, DropConnect, Dropout, LossNoise, WeightInit
from dicelab.randomness.optimization import (
    BatchSchedule,
    BatchSize,
    GradientDropout,
    GradientNoise,
    LearningRate,
    LrSchedule,
    OptimizerChoice,
    WeightNoise,
)
from dicelab.registry import Registry

__all__ = ["TECHNIQUES", "techniques", "technique", "technique_names", "HOOK_ORDER"]

_ALL: tuple[type[Technique], ...] = (
    Shuffle, Flip, Rotation, Zoom, Translation, Contrast, InputNoise, LabelSmoothing,
    WeightInit, Dropout, DropConnect, Drnn, ActivationNoise, LossNoise,
    OptimizerChoice, LearningRate, LrSchedule, BatchSize, BatchSchedule, WeightNoise, GradientNoise, GradientDropout,
)

TECHNIQUES: Registry[type[Technique]] = Registry("technique", "randomness")
for _cls in sorted(_ALL, key=lambda c: c.paper_index):
    TECHNIQUES.register(_cls.name, _cls)

# Within each hook point, techniques run in this order (spec 01 §3).
HOOK_ORDER: dict[str, tuple[str, ...]] = {
    "configure": ("optimizer", "lr", "batch_size", "lr_schedule"),
    "wrap_model": ("weight_init", "dropconnect", "weight_noise", "activation_noise", "dropout", "drnn"),
    "on_epoch": ("lr_schedule", "batch_schedule", "shuffle"),
    "on_batch": ("weight_noise", "flip", "rotation", "zoom", "translation", "contrast", "input_noise",
                 "label_smoothing"),
    "on_loss": ("loss_noise",),
    "on_grads": ("gradient_dropout", "drnn", "gradient_noise"),
    "before_step": ("weight_noise",),
    "after_step": ("drnn",),
}


def techniques(level: Level | str | None = None) -> list[type[Technique]]:
    """The techniques (of one level, if given), in paper-index order."""
    classes = [TECHNIQUES.get(n) for n in TECHNIQUES.names()]
    if level is not None:
        classes = [c for c in classes if c.level == Level(level)]
    return classes


def technique(name: str) -> type[Technique]:
    return TECHNIQUES.get(name)


def technique_names() -> list[str]:
    return TECHNIQUES.names()
