"""The small CNN of spec 04 §13 (digits-cnn), used by the depth-curve benchmark and the probe tests.

``b1`` Conv(1→16, 3×3, pad 1)+ReLU (8×8); ``b2`` Conv(16→32)+ReLU+MaxPool2 (4×4); ``b3`` Conv(32→64)+ReLU+
MaxPool2 (2×2); global average pooling; ``fc`` Linear(64→10). Taps ``b1, b2, b3`` read the block outputs.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["DigitsCNN", "digits_cnn", "cnn_factory"]


class DigitsCNN(nn.Module):
    """Three conv blocks and a linear classifier, with the block names the depth check taps."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.b1 = nn.Sequential(OrderedDict(conv=nn.Conv2d(in_channels, c1, 3, padding=1), act=nn.ReLU()))
        self.b2 = nn.Sequential(OrderedDict(conv=nn.Conv2d(c1, c2, 3, padding=1), act=nn.ReLU(), pool=nn.MaxPool2d(2)))
        self.b3 = nn.Sequential(OrderedDict(conv=nn.Conv2d(c2, c3, 3, padding=1), act=nn.ReLU(), pool=nn.MaxPool2d(2)))
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b3(self.b2(self.b1(x)))
        return self.fc(h.mean(dim=(2, 3)))

    def sites(self) -> dict[str, list[str]]:
        return {"activation": ["b1.act", "b2.act", "b3.act"], "dropout": ["b1", "b2", "b3"],
                "connect": ["b1.conv", "b2.conv", "b3.conv"]}


def digits_cnn(seed: int, in_channels: int = 1, num_classes: int = 10) -> DigitsCNN:
    """A DigitsCNN initialised from the run's ``init`` stream of ``seed`` (the global RNG is left alone)."""
    from dicelab.seeding import derive_seed

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return DigitsCNN(in_channels, num_classes)


def cnn_factory(seed: int, data) -> DigitsCNN:
    """Model factory for sweeps (``sweep(..., model_factory=cnn_factory)``): a DigitsCNN for ``data``."""
    return digits_cnn(seed, in_channels=data.input_shape[0], num_classes=data.num_classes)
