"""Data-input fuzz findings: ``--data`` files whose contents or bytes once ended in a raw traceback (numpy's byte
order, a zero-size image axis, a .npy named .npz, meta and nested tensors, a symlink loop), a damaged .pt read
silently (a flipped byte in the tensor data), labels of documented integer dtypes refused, a control character
splitting the error line; and torchvision roots whose damaged files raised torchvision's own KeyError, TypeError or
unpickling error, or were named without the file to fix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kwta_robust.cli import main
from kwta_robust.data import load_dataset
from kwta_robust.datafile import load_data_file
from kwta_robust.errors import ConfigError, DataError
from kwta_robust.results import load_record
from test_cli_eval import run_error
from test_data import _write_idx
from test_datafile import N, _write, cfg, ckpt, evaluate, images  # noqa: F401  (fixtures)

LABELS = np.arange(N) % 10


def _pt_with_flipped_byte(path: Path) -> Path:
    torch.save({"x": torch.from_numpy(images()), "y": torch.from_numpy(LABELS)}, path)
    data = bytearray(path.read_bytes())
    data[2000] ^= 0xFF  # inside x's stored values: torch.load reads the other number without a word
    path.write_bytes(bytes(data))
    return path


def _npy_named_npz(path: Path) -> Path:
    np.save(path.with_suffix(".npy"), images())
    path.with_suffix(".npy").rename(path)
    return path


def _symlink_loop(path: Path) -> Path:
    os.symlink(path.with_name("b.npz"), path)
    os.symlink(path, path.with_name("b.npz"))
    return path


BAD = {
    # min() of an empty tensor: RuntimeError traceback
    "zero height": (lambda p: _write(p / "d.npz", x=images()[:, :, :0], y=LABELS),
                    "x of shape (12, 1, 0, 28) holds no pixels (an axis of size 0); give images [N, C, H, W]"),
    "zero channels": (lambda p: _write(p / "d.npz", x=images()[:, :0], y=LABELS), "x of shape (12, 0, 28, 28) holds"),
    # uint8 skipped the range check: accepted as images of width 0, then the model's shape error
    "zero width uint8": (lambda p: _write(p / "d.npz", x=np.zeros((N, 1, 28, 0), np.uint8), y=LABELS),
                         "x of shape (12, 1, 28, 0) holds no pixels"),
    # TypeError: 'numpy.ndarray' object does not support the context manager protocol
    "npy named npz": (lambda p: _npy_named_npz(p / "d.npz"),
                      "holds one .npy array, not an .npz archive; save x and y together: numpy.savez(FILE, x=x, y=y)"),
    # was "an array needs pickle (object dtype)"
    "text named npz": (lambda p: _text(p / "d.npz"), "not a readable .npz file (not a zip archive)"),
    # NotImplementedError: Cannot copy out of meta tensor; no data!
    "meta tensor": (lambda p: _write(p / "d.pt", x=torch.empty(N, 1, 28, 28, device="meta"), y=torch.zeros(N).long()),
                    "x is on the meta device (a shape without values); give the tensor that holds the images"),
    # RuntimeError: Internal error: NestedTensorImpl doesn't support sizes
    "nested tensor": (lambda p: _write(p / "d.pt", x=torch.nested.nested_tensor([torch.rand(1, 28, 28)] * 2),
                                       y=torch.zeros(2).long()),
                      "x is a nested tensor; stack the images into one [N, C, H, W] tensor (torch.stack)"),
    # evaluated silently with one changed number
    "flipped byte in .pt": (lambda p: _pt_with_flipped_byte(p / "d.pt"),
                            "fails its CRC check (the file is damaged); re-create it with torch.save"),
    # RuntimeError: Symlink loop from ... (Path.resolve)
    "symlink loop": (lambda p: _symlink_loop(p / "a.npz"), "a.npz: a symlink loop; point --data at the file itself"),
    "y uint64 beyond int64": (lambda p: _write(p / "d.npz", x=images(), y=np.full(N, 2**63, np.uint64)),
                              "label 9223372036854775808 does not fit int64; labels are class indices 0..K-1"),
}


def _text(path: Path) -> Path:
    path.write_text("x,y\n0.5,1\n")
    return path


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_is_one_error_line(case, tmp_path, ckpt, cfg, capsys) -> None:  # noqa: F811
    make, expected = BAD[case]
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg), "--data", str(make(tmp_path)),
                              "--no-progress", "--out", str(tmp_path / "r.json")])
    assert expected in line, line
    assert not (tmp_path / "r.json").exists()


def test_a_control_character_in_the_path_stays_on_one_line(tmp_path, ckpt, cfg, capsys) -> None:  # noqa: F811
    path = tmp_path / "a\nb.npz"
    assert main(["evaluate", str(ckpt), "--config", str(cfg), "--data", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: --data ") and "a\\nb.npz" in err and "file not found; check the path" in err


def test_big_endian_arrays_read_as_their_values(tmp_path, ckpt, cfg, capsys) -> None:  # noqa: F811
    """x/y saved big-endian (numpy '>f4', '>i8'; e.g. from a MATLAB or network-order source): a ValueError
    traceback from torch.from_numpy before; now the same data and record as the native file."""
    x = images()
    _write(tmp_path / "native.npz", x=x, y=LABELS)
    _write(tmp_path / "big.npz", x=x.astype(">f4"), y=LABELS.astype(">i8"))
    _write(tmp_path / "big8.npz", x=np.round(x * 255).astype(np.uint8), y=LABELS.astype(">u2"))
    native, big = load_data_file(tmp_path / "native.npz"), load_data_file(tmp_path / "big.npz")
    assert torch.equal(native.x, big.x) and big.y.tolist() == LABELS.tolist() and big.y.dtype == torch.int64
    assert load_data_file(tmp_path / "big8.npz").y.tolist() == LABELS.tolist()
    records = []
    for name in ("native", "big"):
        assert evaluate(ckpt, cfg, tmp_path / f"{name}.npz", tmp_path / f"{name}.json") == 0, capsys.readouterr().err
        records.append(load_record(tmp_path / f"{name}.json"))
    assert records[0].clean_flags == records[1].clean_flags and records[0].dataset["indices"] == \
        records[1].dataset["indices"]
    assert [r.flags for r in records[0].results] == [r.flags for r in records[1].results]


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_unsigned_labels_are_integers(dtype, tmp_path) -> None:
    """The module documents "any integer dtype" for y; uint16/32/64 were refused as "labels must be integers"."""
    _write(tmp_path / "d.npz", x=images(), y=LABELS.astype(dtype))
    data = load_data_file(tmp_path / "d.npz", num_classes=10)
    assert data.y.dtype == torch.int64 and data.y.tolist() == LABELS.tolist()
    torch.save({"x": torch.from_numpy(images()), "y": torch.from_numpy(LABELS.astype(dtype))}, tmp_path / "d.pt")
    assert load_data_file(tmp_path / "d.pt", num_classes=10).y.tolist() == LABELS.tolist()


# --- torchvision roots -------------------------------------------------------------------------------------------


def _mnist_root(root: Path, n_images: int = 4, n_labels: int = 4) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for prefix in ("train", "t10k"):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.randint(0, 256, size=(n_images, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.randint(0, 10, size=n_labels))
    return raw


def _patch(path: Path, offset: int, data: bytes) -> None:
    content = bytearray(path.read_bytes())
    content[offset:offset + len(data)] = data
    path.write_bytes(bytes(content))


IMAGES, LABEL_FILE = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


@pytest.mark.parametrize("case,damage,expected", [
    # type code 10 is unused in the IDX format: KeyError: 10 from torchvision's type table
    ("type code 10", lambda raw: _patch(raw / IMAGES, 2, b"\x0a"), "(torchvision: KeyError: 10)"),
    # int8 images: torchvision's TypeError "x should be of dtype torch.uint8 instead of torch.int8"
    ("int8 images", lambda raw: _patch(raw / IMAGES, 2, b"\x09"),
     "(torchvision: x should be of dtype torch.uint8 instead of torch.int8)"),
])
def test_damaged_idx_files_are_one_line(case, damage, expected, tmp_path) -> None:
    damage(_mnist_root(tmp_path))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"mnist: cannot read the data at {tmp_path / 'MNIST' / 'raw'}")
    assert expected in message and "fetch it again" in message


def test_idx_image_and_label_counts_that_differ_name_the_files(tmp_path) -> None:
    """4 images and 3 labels: before, "mnist: y must be an int64 tensor of shape [4], got torch.int64 (3,)"."""
    _mnist_root(tmp_path, n_images=4, n_labels=3)
    with pytest.raises(DataError, match=r"^mnist \(test\): the files at .*MNIST/raw hold 4 images but 3 labels; they "
                                        r"are damaged or from different releases — fetch them again"):
        load_dataset("mnist", "test", root=tmp_path)


def test_idx_label_out_of_range_names_the_files_and_the_fix(tmp_path, capsys) -> None:
    raw = _mnist_root(tmp_path)
    _patch(raw / LABEL_FILE, 8, bytes([200]))
    _patch(raw / "train-labels-idx1-ubyte", 8, bytes([200]))
    with pytest.raises(DataError, match=r"^mnist \(test\): label 200 in the files at .*MNIST/raw, but mnist has 10 "
                                        r"classes \(0\.\.9\); the files are damaged — fetch them again"):
        load_dataset("mnist", "test", root=tmp_path)
    line = run_error(capsys, ["train", "--dataset", "mnist", "--data-root", str(tmp_path), "--arch", "mlp",
                              "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "m.pt")])
    assert line.startswith("error: mnist (train): label 200 in the files at") and not (tmp_path / "m.pt").exists()


def test_split_seed_beyond_numpys_32_bits_is_a_config_error(tmp_path, capsys) -> None:
    """RandomState takes seeds < 2**32: a ValueError traceback from `train --split-seed 8589934592` before."""
    with pytest.raises(ConfigError,
                       match=r"^split_seed: must be <= 4294967295 \(numpy's RandomState\), got 8589934592; use a"):
        load_dataset("digits", "test", seed=2**33)
    line = run_error(capsys, ["train", "--dataset", "digits", "--split-seed", str(2**33), "--arch", "mlp", "--epochs",
                              "1", "--device", "cpu", "--out", str(tmp_path / "m.pt")])
    assert "error: --split-seed: must be <= 4294967295" in line and not (tmp_path / "m.pt").exists()
    assert len(load_dataset("digits", "test", seed=2**32 - 1)) == 450


def test_an_empty_train_data_root_is_refused_as_evaluate_refuses_it(tmp_path, capsys) -> None:
    """`train --data-root ''` read (and with --download would fetch into) the working folder; evaluate refused it."""
    line = run_error(capsys, ["train", "--dataset", "mnist", "--data-root", "", "--arch", "mlp", "--epochs", "1",
                              "--device", "cpu", "--out", str(tmp_path / "m.pt")])
    assert line == "error: --data-root: expected a non-empty string, got ''" and not (tmp_path / "m.pt").exists()
