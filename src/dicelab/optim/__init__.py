"""Optimizers: a name registry over ``torch.optim`` (and dicelab's own optimizers)."""

from dicelab.optim.registry import build_optimizer, optimizer_names, register_optimizer

__all__ = ["build_optimizer", "optimizer_names", "register_optimizer"]
