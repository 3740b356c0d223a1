"""Datasets held in memory as tensors, with a train / validation / test split.

Embedded (offline): ``digits``, ``mnist1d``, ``teacher``. Real (from ``data_dir``, downloaded only on
request): ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``.
"""

from dicelab.data import embedded as _embedded  # noqa: F401  (registers the embedded datasets)
from dicelab.data import real as _real  # noqa: F401  (registers the real datasets)
from dicelab.data.base import (
    DataBundle,
    DatasetInfo,
    Split,
    dataset_info,
    dataset_names,
    describe_datasets,
    load_dataset,
    register_dataset,
)

__all__ = ["DataBundle", "DatasetInfo", "Split", "dataset_info", "dataset_names", "describe_datasets",
           "load_dataset", "register_dataset"]
