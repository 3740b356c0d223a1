"""Multi-layer perceptron with stable layer names: ``flatten, fc1, act1, fc2, act2, ..., head``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from dicelab.models.activations import make_activation


class MLP(nn.Sequential):
    """``in_features → widths[0] → ... → widths[-1] → num_classes``; inputs of any shape are flattened.

    Hidden layer ``i`` (1-based) is ``fc{i}`` followed by ``act{i}``; the output layer is ``head``.
    """

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int, activation: str = "relu") -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        prev = in_features
        for i, width in enumerate(widths, start=1):
            layers[f"fc{i}"] = nn.Linear(prev, width)
            layers[f"act{i}"] = make_activation(activation)
            prev = width
        layers["head"] = nn.Linear(prev, num_classes)
        super().__init__(layers)
        self.widths = tuple(widths)

    def sites(self) -> dict[str, list[str]]:
        """Named attachment points: hidden activations, where dropout goes (after them), and
        connection layers (every Linear but the head)."""
        return mlp_sites(len(self.widths))


def mlp_sites(depth: int) -> dict[str, list[str]]:
    """The sites of any MLP laid out as ``fc1, act1, …, fc{depth}, act{depth}, head`` (the variants in
    :mod:`dicelab.models` share this layout)."""
    acts = [f"act{i}" for i in range(1, depth + 1)]
    return {"activation": acts, "dropout": list(acts), "connect": [f"fc{i}" for i in range(1, depth + 1)]}
