"""Digits data with the spec-06 split (1437 train / 360 test) and trained digits nets, each trained once per
test session."""

from __future__ import annotations

import torch

_CACHE: dict[tuple, object] = {}


def digits():
    """The spec-06 digits data: pixels/16, seeded 80/20 split (1437/360)."""
    from dicelab.data import load_dataset

    if "digits" not in _CACHE:
        _CACHE["digits"] = load_dataset("digits", val_fraction=0.0, train_size=1437)
    return _CACHE["digits"]


def train_digits(seed: int, widths=(32, 32), activation="relu", epochs=15, name="mlp", optimizer="sgd", lr=0.1,
                 options=None, model=None):
    """A trained digits net (SGD lr 0.1, batch 64, mean cross-entropy by default), cached per session."""
    from dicelab.config import load_run_config
    from dicelab.train import Trainer

    key = ("train", seed, tuple(widths), activation, epochs, name, optimizer, lr, tuple(sorted((options or {}).items())),
           model)
    if key in _CACHE:
        return _CACHE[key]
    cfg = load_run_config(data={
        "name": "sym", "seed": seed,
        "data": {"name": "digits", "val_fraction": 0.0, "options": {"train_size": 1437}},
        "model": {"name": name, "widths": list(widths), "activation": activation, "options": dict(options or {})},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": optimizer, "lr": lr, "progress": False, "threads": 1},
        "output": {"checkpoint": False}})
    net = None
    if model is not None:  # a hand-built module, initialised from the run's `init` stream
        from dicelab.seeding import SeedBank

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SeedBank(seed).seed("init"))
            net = model()
    trainer = Trainer(cfg, data=digits(), model=net, quiet=True)
    record = trainer.fit(write=False)
    _CACHE[key] = (trainer.model.eval(), record)
    return _CACHE[key]
