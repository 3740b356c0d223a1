"""Datasets that need no download: scikit-learn's bundled digits, locally generated MNIST-1D, and a
synthetic teacher-student task. Each is built from a fixed *data seed*, independent of the run seed,
so every run of a study sees the same data."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from dicelab.data.base import DatasetInfo, Split, register_dataset
from dicelab.errors import ConfigError

__all__ = ["load_digits", "load_mnist1d", "load_teacher", "teacher_network"]


@lru_cache(maxsize=4)
def _digits_arrays(data_seed: int, train_size: int) -> tuple[Split, Split]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # N×1×8×8 in [0, 1]
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    # The bundled file is ordered by writer; one fixed permutation makes "first train_size" a fair split.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(data_seed))
    x, y = x[perm], y[perm]
    return Split(x[:train_size], y[:train_size]), Split(x[train_size:], y[train_size:])


def load_digits(data_seed: int = 0, train_size: int = 1000) -> tuple[Split, Split, int]:
    """scikit-learn's 1,797 real 8×8 handwritten digits as 1×8×8 images in [0, 1].

    Permuted once with ``data_seed``; the first ``train_size`` samples form the official training
    set, the remaining 797 (by default) the test set.
    """
    if not 10 <= train_size < 1797:
        raise ConfigError(f"data.options.train_size: {train_size} outside [10, 1797)")
    train, test = _digits_arrays(int(data_seed), int(train_size))
    return train, test, 10


@lru_cache(maxsize=4)
def _mnist1d_arrays(data_seed: int, num_samples: int) -> tuple[Split, Split]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = data_seed
    args.num_samples = num_samples
    # make_dataset seeds NumPy's global RNG; keep the caller's global state as it was.
    state = np.random.get_state()
    try:
        data = make_dataset(args)  # local generator only; the package's download path is never used
    finally:
        np.random.set_state(state)
    train = Split(torch.as_tensor(data["x"], dtype=torch.float32), torch.as_tensor(data["y"], dtype=torch.int64))
    test = Split(torch.as_tensor(data["x_test"], dtype=torch.float32),
                 torch.as_tensor(data["y_test"], dtype=torch.int64))
    return train, test


def load_mnist1d(data_seed: int = 42, num_samples: int = 5000) -> tuple[Split, Split, int]:
    """MNIST-1D (Greydanus 2020): 40-sample 1-D signals of the ten digit templates, generated locally
    with the ``mnist1d`` package's ``make_dataset`` (its defaults: 5,000 samples, 80% train)."""
    train, test = _mnist1d_arrays(int(data_seed), int(num_samples))
    return train, test, 10


def teacher_network(dim: int, hidden: int, classes: int, teacher_seed: int) -> torch.nn.Sequential:
    """The fixed random teacher: dim → hidden (tanh) → classes, weights N(0, 1/fan_in), biases 0."""
    g = torch.Generator().manual_seed(teacher_seed)
    first = torch.nn.Linear(dim, hidden)
    second = torch.nn.Linear(hidden, classes)
    with torch.no_grad():
        for layer in (first, second):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / layer.in_features**0.5)
            layer.bias.zero_()
    return torch.nn.Sequential(first, torch.nn.Tanh(), second).requires_grad_(False)


@lru_cache(maxsize=8)
def _teacher_arrays(n_train: int, n_test: int, dim: int, hidden: int, classes: int,
                    teacher_seed: int, data_seed: int) -> tuple[Split, Split]:
    teacher = teacher_network(dim, hidden, classes, teacher_seed)
    g = torch.Generator().manual_seed(data_seed)
    x = torch.randn(n_train + n_test, dim, generator=g)
    with torch.no_grad():
        y = teacher(x).argmax(dim=1)
    return Split(x[:n_train], y[:n_train]), Split(x[n_train:], y[n_train:])


def load_teacher(n_train: int = 1000, n_test: int = 10000, dim: int = 50, hidden: int = 100,
                 classes: int = 10, teacher_seed: int = 0, data_seed: int = 0) -> tuple[Split, Split, int]:
    """Teacher-student classification: x ~ N(0, I_dim), label = argmax of a fixed random tanh MLP teacher."""
    for name, value, low in (("n_train", n_train, 1), ("n_test", n_test, 1), ("dim", dim, 1),
                             ("hidden", hidden, 1), ("classes", classes, 2)):
        if value < low:
            raise ConfigError(f"data.options.{name}: {value} must be >= {low}")
    train, test = _teacher_arrays(n_train, n_test, dim, hidden, classes, teacher_seed, data_seed)
    return train, test, classes


register_dataset(DatasetInfo("digits", "embedded", (1, 8, 8), 10, 1000, 797, load_digits,
                             "scikit-learn's bundled 8x8 handwritten digits (real data, 1,797 images)"))
register_dataset(DatasetInfo("mnist1d", "embedded", (40,), 10, 4000, 1000, load_mnist1d,
                             "MNIST-1D signals generated locally by the mnist1d package"))
register_dataset(DatasetInfo("teacher", "embedded", (50,), 10, 1000, 10000, load_teacher,
                             "Gaussian inputs labelled by a fixed random teacher MLP (sizes configurable)"))
