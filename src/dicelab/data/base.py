"""Dataset containers and the dataset registry.

Every dataset lives in memory as tensors: ``x`` float32 (images as N×C×H×W in [0, 1], vectors as N×D)
and ``y`` int64 class labels. A loader returns the *official* train and test sets; :func:`load_dataset`
then cuts the validation split off the end of the official training set (the 2404.03992 protocol:
the last 20%, not shuffled).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dicelab.errors import ConfigError, DatasetError
from dicelab.registry import Registry

__all__ = ["DATASETS", "Split", "DataBundle", "DatasetInfo", "register_dataset", "dataset_names", "dataset_info",
           "load_dataset", "describe_datasets"]


@dataclass(frozen=True)
class Split:
    """One split of a dataset: inputs ``x`` and integer labels ``y`` on the same device."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class DataBundle:
    """Train / validation / test splits of one dataset plus what a model needs to know about it."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    meta: dict = field(default_factory=dict)

    def to(self, device: torch.device | str) -> DataBundle:
        return DataBundle(self.name, self.train.to(device), self.val.to(device), self.test.to(device),
                          self.num_classes, self.input_shape, self.meta)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


# A loader returns (official train, official test, num_classes) and takes keyword options.
Loader = Callable[..., tuple[Split, Split, int]]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str                      # "embedded" (generated or bundled, always offline) or "real" (files on disk)
    input_shape: tuple[int, ...]
    num_classes: int
    train_size: int
    test_size: int
    loader: Loader
    description: str
    files: Callable[[Path], list[Path]] | None = None   # real datasets: the files that must exist under data_dir

    @property
    def offline(self) -> bool:
        return self.kind == "embedded"

    def options(self) -> list[str]:
        """Keyword options the loader accepts (besides data_dir / download)."""
        params = inspect.signature(self.loader).parameters
        return [p for p in params if p not in ("data_dir", "download")]

    def available(self, data_dir: Path | None) -> bool:
        if self.files is None:
            return True
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        return all(p.exists() or Path(str(p) + ".gz").exists() for p in self.files(root))


DATASETS: Registry[DatasetInfo] = Registry("dataset", "data.name")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset to the registry (a plugin may call this with its own loader)."""
    return DATASETS.register(info.name, info)


def dataset_names() -> list[str]:
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def default_data_dir() -> Path:
    return Path("data")


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    val_fraction: float = 0.2,
    standardize: bool = False,
    device: torch.device | str = "cpu",
    **options,
) -> DataBundle:
    """Load ``name`` and split it into train / validation / test.

    The validation split is the last ``val_fraction`` of the official training set, in its stored
    order (``val_fraction=0`` gives an empty validation split). ``standardize`` z-scores every input
    feature with the training split's mean and standard deviation.
    """
    info = dataset_info(name)
    unknown = sorted(set(options) - set(info.options()))
    if unknown:
        known = ", ".join(info.options()) or "none"
        raise ConfigError(f"data.options.{unknown[0]}: unknown option for dataset {name!r} (known: {known})")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: {val_fraction} outside [0, 1)")
    kwargs = dict(options)
    if info.kind == "real":
        kwargs.update(data_dir=Path(data_dir) if data_dir is not None else default_data_dir(), download=download)
    train_full, test, num_classes = info.loader(**kwargs)
    n_val = int(round(len(train_full) * val_fraction))
    n_train = len(train_full) - n_val
    if n_train <= 0:
        raise ConfigError(f"data.val_fraction: {val_fraction} leaves no training samples")
    train = Split(train_full.x[:n_train], train_full.y[:n_train])
    val = Split(train_full.x[n_train:], train_full.y[n_train:])
    meta = {"options": options, "val_fraction": val_fraction, "standardize": standardize}
    if standardize:
        mean = train.x.mean(dim=0, keepdim=True)
        std = train.x.std(dim=0, keepdim=True).clamp_min(1e-6)  # constant pixels (digits borders) stay 0
        train, val, test = (Split((s.x - mean) / std, s.y) for s in (train, val, test))
    bundle = DataBundle(name, train, val, test, num_classes, tuple(train.x.shape[1:]), meta)
    return bundle.to(device) if str(device) != "cpu" else bundle


def describe_datasets(data_dir: str | Path | None = None) -> list[dict]:
    """One row per registered dataset, for ``dicelab datasets``."""
    root = Path(data_dir) if data_dir is not None else None
    return [
        {
            "name": info.name,
            "kind": info.kind,
            "input_shape": list(info.input_shape),
            "num_classes": info.num_classes,
            "train_size": info.train_size,
            "test_size": info.test_size,
            "offline": info.offline,
            "available": info.available(root),
            "options": info.options(),
            "description": info.description,
        }
        for info in DATASETS
    ]


def check_dataset_error(path: Path, problem: str) -> DatasetError:
    """The one-line error for a bad dataset file: it names the file and what is wrong."""
    return DatasetError(f"{path}: {problem}")
