"""Factories for the CLI tests (``package.module:factory`` architecture strings)."""

from __future__ import annotations

from torch import nn


class WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.encoder = nn.LSTM(8, 8)

    def forward(self, x):
        return self.encoder(self.inp(x))[0]


def lstm_model() -> nn.Module:
    return WithLSTM()


def bn_mlp() -> nn.Module:
    """64-64-64-10 digits MLP with BatchNorm1d after each hidden Linear (Linear -> BN -> ReLU)."""
    layers = [nn.Flatten()]
    prev = 64
    for _ in range(2):
        layers += [nn.Linear(prev, 64), nn.BatchNorm1d(64), nn.ReLU()]
        prev = 64
    layers.append(nn.Linear(prev, 10))
    return nn.Sequential(*layers)
