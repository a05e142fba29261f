"""Data registry and data files, behaviour pinned against independent computations: the digits split rule written
out (``RandomState(seed).permutation``, first 1,347 train, last 450 test), ``$KWTA_ROBUST_DATA``, the TensorData and
[0, 1] checks at their exact boundaries, the torchvision sets from tiny files in their real on-disk formats (idx
ubyte with its magic number, SVHN ``{split}_32x32.mat`` with label 10 meaning digit 0, a corrupt idx file as one
``DataError`` line), and ``--data`` files (uint8 / 255, any channel count, extra entries ignored, labels as int64,
the SHA-256 pin's form, models disagreeing on their classes).

These tests kill the survivors of a mutation-testing round on ``kwta_robust/data.py`` and
``kwta_robust/datafile.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwta_robust.data import REGISTRY, DatasetInfo, TensorData, default_data_root, load_dataset
from kwta_robust.datafile import DataFileSpec, data_from_arrays, eval_data_from_file, model_num_classes
from kwta_robust.errors import ConfigError, DataError
from test_data import _md5, _write_idx
from test_datafile import images


# --- bundled sets: the documented split rule --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3])
def test_digits_split_is_the_documented_rule_for_any_seed(seed: int) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.RandomState(seed).permutation(1797)  # the legacy generator, frozen across NumPy versions
    for split, keep in (("train", order[:1347]), ("test", order[1347:])):
        data = load_dataset("digits", split, seed=seed)
        assert torch.equal(data.x, torch.from_numpy(digits.images[keep][:, None] / 16.0).float())
        assert data.y.tolist() == digits.target[keep].tolist()


# --- the data root and the load-time checks ------------------------------------------------------------------------


def _mnist_raw(root: Path, n_train: int = 3, n_test: int = 2, side: int = 28, seed: int = 0) -> dict[str, tuple]:
    """IDX files of MNIST under ``root/MNIST/raw`` (torchvision's names); returns ``{prefix: (images, labels)}``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = rng.randint(0, 256, size=(n, side, side)).astype(np.uint8)
        labels = rng.randint(0, 10, size=n).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", pixels)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = (pixels, labels)
    return written


def test_data_root_comes_from_the_environment_then_the_home_cache(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KWTA_ROBUST_DATA", raising=False)
    assert default_data_root() == tmp_path / "home" / ".cache" / "kwta-robust" / "data"
    monkeypatch.setenv("KWTA_ROBUST_DATA", "~/sets")
    assert default_data_root() == tmp_path / "home" / "sets"
    pixels, labels = _mnist_raw(tmp_path / "home" / "sets")["t10k"]
    data = load_dataset("mnist", "test")  # no root: the environment's
    assert torch.equal(data.x, torch.from_numpy(pixels).float().unsqueeze(1) / 255.0)
    assert data.y.tolist() == labels.tolist()


def test_tensor_data_checks_at_their_boundaries() -> None:
    x, y, idx = torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 9]), torch.arange(3)
    assert TensorData(x, y, "t", 10, idx).num_classes == 10  # label 9 of 10 classes: the largest valid one
    for bad_x, bad_y, bad_idx, classes, match in (
        (x, y, idx, 9, r"labels must be class indices 0\.\.8"),  # label 9 is not a class of 9
        (x, torch.tensor([0, -1, 2]), idx, 10, "labels must be class indices"),
        (x.double(), y, idx, 10, "x must be a float32"),
        (x[0], y, idx, 10, "x must be a float32"),
        (x, y[:2], idx, 10, "y must be an int64 tensor of shape"),
        (x, y, idx[:2], 10, "indices must be an int64 tensor of shape"),
    ):
        with pytest.raises(DataError, match=match):
            TensorData(bad_x, bad_y, "t", classes, bad_idx)


@pytest.mark.parametrize("low,high,ok", [(0.0, 1.0, True), (0.0, 1.001, False), (-0.001, 1.0, False),
                                         (-0.5, 0.5, False), (0.0, 255.0, False), (0.0, float("nan"), False),
                                         (0.0, float("inf"), False)])
def test_load_dataset_refuses_a_loader_outside_the_unit_range(low: float, high: float, ok: bool) -> None:
    def loader(split, root, download, seed):
        return torch.tensor([low, high]).view(2, 1, 1, 1).float(), torch.tensor([0, 1])

    with REGISTRY.temporarily("range-toy", DatasetInfo("range-toy", loader, 2, (1, 1, 1), (0.5,), (0.5,))):
        if ok:
            assert load_dataset("range-toy", "test").x.flatten().tolist() == [low, high]
        else:
            with pytest.raises(DataError, match=r"range-toy \(test\): inputs must lie in \[0, 1\]"):
                load_dataset("range-toy", "test")


def test_mnist_read_with_another_image_size_is_refused(tmp_path: Path) -> None:
    _mnist_raw(tmp_path, side=27)  # valid idx files, but not 28×28 images
    with pytest.raises(DataError, match=r"mnist: expected samples of shape \(1, 28, 28\), read \(1, 27, 27\)"):
        load_dataset("mnist", "test", root=tmp_path)


# --- torchvision sets in their on-disk formats ---------------------------------------------------------------------


def test_missing_folder_is_data_not_found_but_download_fetches_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import MNIST

    with pytest.raises(DataError, match=r"mnist: data not found at .*MNIST/raw; pass --data-root"):
        load_dataset("mnist", "test", root=tmp_path)
    fetched = []

    def fake_download(self) -> None:  # what torchvision's download leaves behind, without a network
        fetched.append(_mnist_raw(Path(self.root), seed=5))

    monkeypatch.setattr(MNIST, "download", fake_download)
    data = load_dataset("mnist", "train", root=tmp_path, download=True)
    pixels, labels = fetched[0]["train"]
    assert torch.equal(data.x, torch.from_numpy(pixels).float().unsqueeze(1) / 255.0)
    assert data.y.tolist() == labels.tolist()


def test_raw_folder_without_the_split_files_is_not_called_an_md5_failure(tmp_path: Path) -> None:
    _mnist_raw(tmp_path)
    for path in (tmp_path / "MNIST" / "raw").glob("t10k-*"):
        path.unlink()  # the train files are there, the test files are not: torchvision's "Dataset not found"
    with pytest.raises(DataError, match=r"mnist: cannot read the data at .*MNIST/raw \(torchvision: Dataset not"):
        load_dataset("mnist", "test", root=tmp_path)


def test_idx_file_with_a_wrong_magic_number_is_one_data_error_line(tmp_path: Path) -> None:
    """The idx magic is 0x00 0x00 <type> <ndim> with type 0x08..0x0E; torchvision checks it with a bare ``assert``,
    which escaped as an AssertionError with no message (a traceback for the user) before the fix."""
    _mnist_raw(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    content = bytearray(path.read_bytes())
    content[2] = 0x02  # not a data type of the format
    path.write_bytes(bytes(content))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"mnist: cannot read the data at {path.parent} (torchvision:")


def _write_svhn(path: Path, rng: np.random.RandomState, digits: list[int]) -> np.ndarray:
    """SVHN's format-2 .mat: ``X`` uint8 [32, 32, 3, N], ``y`` [N, 1] with 10 encoding the digit 0."""
    import scipy.io as scipy_io

    pixels = rng.randint(0, 256, size=(32, 32, 3, len(digits))).astype(np.uint8)
    scipy_io.savemat(path, {"X": pixels, "y": np.array([[d if d else 10] for d in digits], dtype=np.uint8)})
    return pixels


def test_svhn_reads_the_file_of_the_split_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import SVHN

    rng = np.random.RandomState(4)
    test_pixels = _write_svhn(tmp_path / "test_32x32.mat", rng, [0, 5])
    with pytest.raises(DataError, match=r"svhn: data not found at .*train_32x32\.mat"):
        load_dataset("svhn", "train", root=tmp_path)  # only the test file is there
    train_pixels = _write_svhn(tmp_path / "train_32x32.mat", rng, [1, 0, 9])
    split_list = {split: [url, name, _md5(tmp_path / name)] for split, (url, name, _) in SVHN.split_list.items()
                  if split in ("train", "test")}
    monkeypatch.setattr(SVHN, "split_list", {**SVHN.split_list, **split_list})
    for split, pixels, digits in (("train", train_pixels, [1, 0, 9]), ("test", test_pixels, [0, 5])):
        data = load_dataset("svhn", split, root=tmp_path)
        assert data.y.tolist() == digits
        assert torch.equal(data.x, torch.from_numpy(pixels.transpose(3, 2, 0, 1).copy()).float() / 255.0)


# --- data files ---------------------------------------------------------------------------------------------------


def test_uint8_images_are_divided_by_255_and_any_channel_count_is_taken() -> None:
    pixels = np.arange(2 * 2 * 4 * 4).reshape(2, 2, 4, 4).astype(np.uint8) * 8 + 3  # two channels, 3..251
    pixels[0, 0, 0, 0], pixels[1, 1, 3, 3] = 0, 255
    data = data_from_arrays(pixels, np.array([0, 1], dtype=np.uint8), "u8")
    assert torch.equal(data.x, torch.from_numpy(pixels.astype(np.float32) / np.float32(255.0)))
    assert data.x.max() == 1.0 and data.input_shape == (2, 4, 4)
    assert data.y.dtype == torch.int64 and data.y.tolist() == [0, 1] and data.num_classes == 2


@pytest.mark.parametrize("high,ok", [(1.0, True), (1.001, False)])
def test_float_images_may_reach_exactly_one(high: float, ok: bool) -> None:
    x = images(2)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, high
    if ok:
        assert data_from_arrays(x, np.array([0, 3], dtype=np.int32), "f").x.max() == 1.0
    else:
        with pytest.raises(DataError, match=r"float x must lie in \[0, 1\]"):
            data_from_arrays(x, np.array([0, 3], dtype=np.int32), "f")


def test_npz_entries_other_than_x_and_y_are_ignored(tmp_path: Path) -> None:
    from kwta_robust.datafile import load_data_file

    x, y = images(3), np.array([2, 0, 1], dtype=np.int16)
    np.savez(tmp_path / "d.npz", x=x, y=y, notes=np.array([{"a": 1}], dtype=object))  # only readable with pickle
    data = load_data_file(tmp_path / "d.npz")
    assert torch.equal(data.x, torch.from_numpy(x)) and data.y.dtype == torch.int64 and data.y.tolist() == [2, 0, 1]


def test_sha256_pin_is_64_hex_digits_stored_lowercase() -> None:
    assert DataFileSpec.from_dict({"file": "d.npz", "sha256": "AB" * 32}).sha256 == "ab" * 32
    for bad in ("a" * 63, "a" * 65, "g" * 64):
        with pytest.raises(ConfigError, match="expected 64 hex digits"):
            DataFileSpec.from_dict({"file": "d.npz", "sha256": bad})


class _Fixed(nn.Module):
    """Returns ``rows`` × ``classes`` zeros whatever the batch."""

    def __init__(self, rows: int | None, classes: int) -> None:
        super().__init__()
        self.rows, self.classes, self.w = rows, classes, nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.rows or x.shape[0], self.classes) + self.w


def test_models_must_agree_on_classes_and_return_one_row_per_sample(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=images(2), y=np.array([0, 4]))
    spec = DataFileSpec(file=str(tmp_path / "d.npz"))
    assert eval_data_from_file(spec, [_Fixed(None, 5), _Fixed(None, 5)]).num_classes == 5
    with pytest.raises(DataError, match=r"the models disagree on the number of classes \(\[5, 10\]\)"):
        eval_data_from_file(spec, [_Fixed(None, 10), _Fixed(None, 5)])
    with pytest.raises(DataError, match=r"should return logits \[N, classes\] for these inputs, got \(2, 5\)"):
        model_num_classes(_Fixed(2, 5), torch.zeros(1, 1, 28, 28))
