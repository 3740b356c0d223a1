import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from dicelab.data import dataset_names, describe_datasets, load_dataset
from dicelab.data.embedded import teacher_network
from dicelab.data.real import read_idx
from dicelab.errors import ConfigError, DatasetError

# -- embedded datasets -----------------------------------------------------------------------------


def test_registry_lists_all_seven():
    assert set(dataset_names()) == {"digits", "mnist1d", "teacher", "mnist", "fashion-mnist", "cifar10", "cifar100"}


def test_digits_split_is_last_20_percent_of_official_train():
    full = load_dataset("digits", val_fraction=0.0)
    split = load_dataset("digits")
    assert split.sizes() == {"train": 800, "val": 200, "test": 797}
    assert full.sizes() == {"train": 1000, "val": 0, "test": 797}
    assert torch.equal(split.val.x, full.train.x[800:]) and torch.equal(split.train.y, full.train.y[:800])
    assert split.input_shape == (1, 8, 8) and split.num_classes == 10
    assert split.train.x.dtype == torch.float32 and 0.0 <= split.train.x.min() and split.train.x.max() <= 1.0
    assert set(split.train.y.tolist()) == set(range(10))
    # the 1,797 digits are split without overlap
    assert len(torch.cat([full.train.x, full.test.x]).flatten(1).unique(dim=0)) > 1700


def test_standardize_uses_training_statistics():
    b = load_dataset("digits", standardize=True)
    mean = b.train.x.mean(0)
    assert mean.abs().max() < 1e-5
    assert not torch.allclose(b.test.x.mean(0), torch.zeros_like(mean), atol=1e-3)


def test_mnist1d_comes_from_the_local_generator():
    state = np.random.get_state()
    b = load_dataset("mnist1d")
    assert b.sizes() == {"train": 3200, "val": 800, "test": 1000}
    assert b.input_shape == (40,)
    assert np.array_equal(state[1], np.random.get_state()[1])  # NumPy's global RNG left as it was


def test_teacher_labels_are_the_teacher_argmax_and_sizes_configurable():
    b = load_dataset("teacher", val_fraction=0.0, n_train=300, n_test=200, dim=7, hidden=9, classes=4)
    assert b.sizes() == {"train": 300, "val": 0, "test": 200} and b.input_shape == (7,) and b.num_classes == 4
    teacher = teacher_network(7, 9, 4, teacher_seed=0)
    assert torch.equal(teacher(b.train.x).argmax(1), b.train.y)
    assert len(b.train.y.unique()) >= 3
    other = load_dataset("teacher", val_fraction=0.0, n_train=300, n_test=200, dim=7, hidden=9, classes=4, teacher_seed=1)
    assert not torch.equal(other.train.y, b.train.y)


def test_unknown_dataset_and_option_errors_name_them():
    with pytest.raises(ConfigError, match="data.name"):
        load_dataset("imagenet")
    with pytest.raises(ConfigError, match="data.options.size"):
        load_dataset("digits", size=3)


# -- real datasets in their on-disk formats ----------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root, folder="MNIST", n_train=12, n_test=5, gz=False):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = rng.integers(0, 10, n, dtype=np.uint8)
    for name, arr in arrays.items():
        data = idx_bytes(arr)
        if gz:
            with gzip.open(raw / f"{name}.gz", "wb") as fh:
                fh.write(data)
        else:
            (raw / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("name, folder, gz", [("mnist", "MNIST", False), ("fashion-mnist", "FashionMNIST", True)])
def test_idx_loader_reads_tiny_files(tmp_path, name, folder, gz):
    arrays = write_mnist(tmp_path, folder, gz=gz)
    b = load_dataset(name, data_dir=tmp_path, val_fraction=0.25)
    assert b.sizes() == {"train": 9, "val": 3, "test": 5}
    assert b.input_shape == (1, 28, 28)
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float().div(255).unsqueeze(1)
    assert torch.equal(b.train.x, expected[:9]) and torch.equal(b.val.x, expected[9:])
    assert torch.equal(b.test.y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())


def test_truncated_idx_file_fails_naming_the_file(tmp_path, run_cli):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte: truncated"):
        load_dataset("mnist", data_dir=tmp_path)
    (tmp_path / "run.toml").write_text(f"[data]\nname = 'mnist'\ndata_dir = '{tmp_path}'\n[model]\nname='mlp'\n")
    code, out, err = run_cli("train", str(tmp_path / "run.toml"), "-q")
    assert code == 2 and "train-images-idx3-ubyte" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_magic_and_missing_files(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x01\x02\x03\x04rubbish")
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte: not an IDX file"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="FashionMNIST/raw/train-images-idx3-ubyte: file not found"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_read_idx_round_trips_other_dtypes(tmp_path):
    arr = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    path = tmp_path / "ints-idx3"
    path.write_bytes(bytes([0, 0, 0x0C, 3]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes())
    assert torch.equal(read_idx(path), torch.arange(24, dtype=torch.int32).reshape(2, 3, 4))


def write_cifar_batch(path, n, label_key, rng, classes):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, classes, n).tolist()
    with open(path, "wb") as fh:
        pickle.dump({"batch_label": "test", "data": data, label_key: labels}, fh, protocol=2)
    return data, labels


def test_cifar10_and_cifar100_pickles(tmp_path):
    rng = np.random.default_rng(1)
    root10 = tmp_path / "cifar-10-batches-py"
    root10.mkdir()
    batches = [write_cifar_batch(root10 / f"data_batch_{i}", 4, "labels", rng, 10) for i in range(1, 6)]
    write_cifar_batch(root10 / "test_batch", 3, "labels", rng, 10)
    b = load_dataset("cifar10", data_dir=tmp_path)
    assert b.sizes() == {"train": 16, "val": 4, "test": 3} and b.input_shape == (3, 32, 32)
    first = torch.from_numpy(batches[0][0][0].reshape(3, 32, 32)).float() / 255
    assert torch.equal(b.train.x[0], first)  # channel planes in CIFAR's row-major RGB layout
    assert torch.equal(b.val.y, torch.tensor(batches[4][1]))

    root100 = tmp_path / "cifar-100-python"
    root100.mkdir()
    write_cifar_batch(root100 / "train", 10, "fine_labels", rng, 100)
    write_cifar_batch(root100 / "test", 2, "fine_labels", rng, 100)
    b100 = load_dataset("cifar100", data_dir=tmp_path, val_fraction=0.2)
    assert b100.num_classes == 100 and b100.sizes() == {"train": 8, "val": 2, "test": 2}


def test_truncated_cifar_pickle_fails_naming_the_file(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        write_cifar_batch(root / f"data_batch_{i}", 2, "labels", rng, 10)
    write_cifar_batch(root / "test_batch", 2, "labels", rng, 10)
    path = root / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match="data_batch_3: corrupt or truncated CIFAR batch"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_describe_reports_offline_and_availability(tmp_path):
    write_mnist(tmp_path)
    rows = {r["name"]: r for r in describe_datasets(tmp_path)}
    assert rows["digits"]["offline"] and rows["digits"]["available"]
    assert not rows["mnist"]["offline"] and rows["mnist"]["available"]
    assert not rows["cifar10"]["available"]
    assert rows["cifar100"]["input_shape"] == [3, 32, 32] and rows["cifar100"]["num_classes"] == 100
