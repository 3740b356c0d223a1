"""Models with stable layer names, built by name from a config."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn

from dicelab.errors import ConfigError
from dicelab.models.activations import ACTIVATIONS, make_activation
from dicelab.models.mlp import MLP
from dicelab.models.vgg import VGG3
from dicelab.registry import Registry

__all__ = ["MODELS", "MLP", "VGG3", "ACTIVATIONS", "make_activation", "build_model", "register_model", "model_names",
           "model_sites"]

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model", "model.name")


def register_model(name: str, factory: ModelFactory) -> None:
    """Register ``factory(input_shape, num_classes, **options) -> nn.Module`` under ``name``."""
    MODELS.register(name, factory)


def model_names() -> list[str]:
    return MODELS.names()


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **options) -> nn.Module:
    factory = MODELS.get(name)
    try:
        return factory(tuple(input_shape), num_classes, **options)
    except TypeError as exc:  # an option the factory does not take
        raise ConfigError(f"model: {exc}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _mlp(input_shape, num_classes, widths=(128, 128), activation="relu", **unused) -> MLP:
    _reject(unused, "mlp")
    return MLP(math.prod(input_shape), widths, num_classes, activation)


def _vgg(input_shape, num_classes, widths=(32, 64, 128), dense=128, activation="relu", batchnorm=True, **unused) -> VGG3:
    _reject(unused, "vgg")
    return VGG3(input_shape, num_classes, widths, dense, activation, batchnorm)


def _reject(unused: dict, model: str) -> None:
    if unused:
        raise ConfigError(f"model.{next(iter(unused))}: not an option of model {model!r}")


register_model("mlp", _mlp)
register_model("vgg", _vgg)

# symmetry-breaking variants (spec 06 §6): structure in buffers, drawn from a structure seed
from dicelab.models.modular import modular_mlp_factory  # noqa: E402
from dicelab.models.orthopoly import orthopoly_mlp_factory  # noqa: E402
from dicelab.models.prepruned import prepruned_mlp_factory  # noqa: E402

register_model("prepruned_mlp", prepruned_mlp_factory)
register_model("orthopoly_mlp", orthopoly_mlp_factory)
register_model("modular_mlp", modular_mlp_factory)


_ACTIVATION_TYPES = (nn.ReLU, nn.GELU, nn.Tanh)
_CONNECT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def model_sites(model: nn.Module) -> dict[str, list[str]]:
    """Attachment sites by kind (``activation``, ``dropout``, ``connect``) as module names.

    dicelab's models declare theirs; for a foreign module the defaults are every ReLU/GELU/Tanh
    (activation, with dropout after it) and every Linear/Conv except the last one (connect).
    """
    if hasattr(model, "sites"):
        return model.sites()
    acts = [n for n, m in model.named_modules() if isinstance(m, _ACTIVATION_TYPES)]
    connect = [n for n, m in model.named_modules() if isinstance(m, _CONNECT_TYPES)][:-1]
    return {"activation": acts, "dropout": list(acts), "connect": connect}
