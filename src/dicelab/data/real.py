"""Real image datasets read from their standard on-disk formats under ``data_dir``.

Layouts are torchvision's (``MNIST/raw/*-ubyte[.gz]``, ``FashionMNIST/raw/...``,
``cifar-10-batches-py/``, ``cifar-100-python/``), so a folder torchvision downloaded works as is.
torchvision is used only to download, and only when asked (``download=True``). The files are parsed
here rather than through torchvision's dataset classes because those verify CIFAR files by MD5 (a tiny
test file cannot pass) and fail on a truncated IDX file with an error that does not name the file.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch

from dicelab.data.base import DatasetInfo, Split, check_dataset_error, register_dataset
from dicelab.errors import DatasetError

__all__ = ["read_idx", "read_cifar_batch", "load_mnist", "load_fashion_mnist", "load_cifar10", "load_cifar100"]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _resolve(path: Path) -> Path:
    """``path`` or its ``.gz`` sibling, whichever exists."""
    if path.exists():
        return path
    gz = Path(str(path) + ".gz")
    if gz.exists():
        return gz
    raise DatasetError(f"{path}: file not found (pass --download once, or copy the dataset into "
                       f"{path.parent.parent.parent if path.parent.name == 'raw' else path.parent})")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise check_dataset_error(path, f"unreadable ({exc})") from None


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (the MNIST format: magic 0x0000TTDD, D big-endian int32 dims, then data).

    A wrong magic number, a truncated file or trailing bytes give a :class:`DatasetError` naming the file.
    """
    path = _resolve(Path(path))
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise check_dataset_error(path, "not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise check_dataset_error(path, f"truncated IDX header ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "has trailing bytes"
        raise check_dataset_error(path, f"{kind}: expected {expected} bytes for shape {shape}, found {len(raw)}")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("=")).copy())


def _mnist_like(folder: str, data_dir: Path, download: bool) -> tuple[Split, Split, int]:
    raw = data_dir / folder / "raw"
    if download:
        _download(folder, data_dir)
    splits = []
    for prefix in ("train", "t10k"):
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte")
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte")
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DatasetError(f"{raw / f'{prefix}-images-idx3-ubyte'}: {tuple(images.shape)} images do not match "
                               f"{tuple(labels.shape)} labels")
        x = images.to(torch.float32).div_(255.0).unsqueeze(1)
        splits.append(Split(x, labels.to(torch.int64)))
    return splits[0], splits[1], 10


def load_mnist(data_dir: Path, download: bool = False) -> tuple[Split, Split, int]:
    """MNIST from ``data_dir/MNIST/raw`` (IDX files, optionally gzipped)."""
    return _mnist_like("MNIST", data_dir, download)


def load_fashion_mnist(data_dir: Path, download: bool = False) -> tuple[Split, Split, int]:
    """Fashion-MNIST from ``data_dir/FashionMNIST/raw``."""
    return _mnist_like("FashionMNIST", data_dir, download)


def read_cifar_batch(path: str | Path, label_key: str) -> Split:
    """One CIFAR python pickle batch (``data``: N×3072 uint8, row-major RGB planes; labels list)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: file not found (pass --download once, or copy the dataset into "
                           f"{path.parent.parent})")
    try:
        with path.open("rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, OSError, AttributeError, IndexError) as exc:
        raise check_dataset_error(path, f"corrupt or truncated CIFAR batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        raise check_dataset_error(path, f"not a CIFAR batch (needs keys 'data' and {label_key!r})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise check_dataset_error(path, f"data of shape {data.shape} does not match {labels.shape[0]} labels "
                                        "of 3x32x32 images")
    x = torch.from_numpy(data.astype(np.uint8).reshape(-1, 3, 32, 32)).to(torch.float32).div_(255.0)
    return Split(x, torch.from_numpy(labels.astype(np.int64)))


def _cat(splits: list[Split]) -> Split:
    return Split(torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits]))


def load_cifar10(data_dir: Path, download: bool = False) -> tuple[Split, Split, int]:
    """CIFAR-10 from ``data_dir/cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``)."""
    if download:
        _download("cifar10", data_dir)
    root = data_dir / "cifar-10-batches-py"
    train = _cat([read_cifar_batch(root / f"data_batch_{i}", "labels") for i in range(1, 6)])
    return train, read_cifar_batch(root / "test_batch", "labels"), 10


def load_cifar100(data_dir: Path, download: bool = False) -> tuple[Split, Split, int]:
    """CIFAR-100 (fine labels) from ``data_dir/cifar-100-python`` (``train``, ``test``)."""
    if download:
        _download("cifar100", data_dir)
    root = data_dir / "cifar-100-python"
    return read_cifar_batch(root / "train", "fine_labels"), read_cifar_batch(root / "test", "fine_labels"), 100


def _download(which: str, data_dir: Path) -> None:
    """Fetch a dataset with torchvision's downloader (the only place dicelab touches the network)."""
    import torchvision.datasets as tvd

    cls = {"MNIST": tvd.MNIST, "FashionMNIST": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[which]
    try:
        for train in (True, False):
            cls(root=str(data_dir), train=train, download=True)
    except Exception as exc:  # network or disk problems: one line, naming the dataset and folder
        raise DatasetError(f"{data_dir}: download of {which} failed ({type(exc).__name__}: {exc})") from None


def _mnist_files(folder: str):
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return lambda root: [root / folder / "raw" / n for n in names]


register_dataset(DatasetInfo("mnist", "real", (1, 28, 28), 10, 60000, 10000, load_mnist,
                             "MNIST handwritten digits (IDX files)", _mnist_files("MNIST")))
register_dataset(DatasetInfo("fashion-mnist", "real", (1, 28, 28), 10, 60000, 10000, load_fashion_mnist,
                             "Fashion-MNIST clothing images (IDX files)", _mnist_files("FashionMNIST")))
register_dataset(DatasetInfo(
    "cifar10", "real", (3, 32, 32), 10, 50000, 10000, load_cifar10, "CIFAR-10 colour images (python pickles)",
    lambda root: [root / "cifar-10-batches-py" / n for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]]))
register_dataset(DatasetInfo(
    "cifar100", "real", (3, 32, 32), 100, 50000, 10000, load_cifar100, "CIFAR-100 colour images (python pickles)",
    lambda root: [root / "cifar-100-python" / n for n in ("train", "test")]))
