"""The 3-block VGG of the 2404.03992 study: conv 32-32 / 64-64 / 128-128, each conv followed by its
activation and BatchNorm, a 2×2 max-pool per block, then dense 128 (+ BatchNorm) and a linear head
(the softmax lives in the cross-entropy). Works for 1- and 3-channel inputs of any size divisible by 8
(8×8 digits, 28×28 MNIST after pooling floors, 32×32 CIFAR)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from dicelab.models.activations import make_activation


def _block(in_ch: int, out_ch: int, activation: str, batchnorm: bool) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (a, b) in enumerate(((in_ch, out_ch), (out_ch, out_ch)), start=1):
        layers[f"conv{i}"] = nn.Conv2d(a, b, kernel_size=3, padding=1)
        layers[f"act{i}"] = make_activation(activation)
        layers[f"bn{i}"] = nn.BatchNorm2d(b) if batchnorm else nn.Identity()
    layers["pool"] = nn.MaxPool2d(2)
    return nn.Sequential(layers)


class VGG3(nn.Sequential):
    """Layer names: ``block{1,2,3}.{conv1,act1,bn1,conv2,act2,bn2,pool}``, ``flatten``, ``fc1``,
    ``act_fc``, ``bn_fc``, ``head``."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (32, 64, 128),
                 dense: int = 128, activation: str = "relu", batchnorm: bool = True) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"model.name: vgg needs image inputs (C, H, W), got shape {tuple(input_shape)}")
        channels, height, width = input_shape
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        prev = channels
        for i, w in enumerate(widths, start=1):
            layers[f"block{i}"] = _block(prev, w, activation, batchnorm)
            prev = w
            height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(f"model.name: input {tuple(input_shape)} is too small for {len(widths)} pooling blocks")
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(prev * height * width, dense)
        layers["act_fc"] = make_activation(activation)
        layers["bn_fc"] = nn.BatchNorm1d(dense) if batchnorm else nn.Identity()
        layers["head"] = nn.Linear(dense, num_classes)
        super().__init__(layers)
        self.n_blocks = len(widths)

    def sites(self) -> dict[str, list[str]]:
        blocks = [f"block{i}" for i in range(1, self.n_blocks + 1)]
        return {
            "activation": [f"{b}.act{j}" for b in blocks for j in (1, 2)] + ["act_fc"],
            "dropout": [f"{b}.pool" for b in blocks] + ["act_fc"],
            "connect": [f"{b}.conv{j}" for b in blocks for j in (1, 2)] + ["fc1"],
        }
