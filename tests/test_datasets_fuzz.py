"""Real data sets from a local root, fuzzed end to end: a legacy ``MNIST/processed`` file torchvision reads before
the raw idx files (a dict or a list: raw AttributeError; float or bool labels, images in [0, 1]: read silently as
other labels or all-black images), a split with no images (a RuntimeError traceback in the first evaluation), a
root path no file system takes (OSError: File name too long), a newline in it (the error line split in two), the
Python API's root/download/seed of another type (raw TypeError, or 1.5 read as split seed 1 and 'no' as a download
request), a raw folder of .gz archives only (told to fetch the data again), and a CIFAR-10 root whose pickles would
run code (never unpickled: torchvision checks every file's MD5 first)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from kwta_robust.data import load_dataset
from kwta_robust.errors import ConfigError, DataError
from test_cli_eval import run_error, write_checkpoint, write_config
from test_data import _md5, _write_cifar
from test_data_fuzz import _mnist_root

U8 = torch.arange(4 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(4, 28, 28)
LABELS = torch.tensor([1, 2, 3, 4])


def _legacy(root: Path, payload: object) -> Path:
    """``root/MNIST/processed/{training,test}.pt`` (torchvision < 0.9's cache), beside valid raw files."""
    _mnist_root(root)
    folder = root / "MNIST" / "processed"
    folder.mkdir()
    for name in ("training.pt", "test.pt"):
        torch.save(payload, folder / name)
    return folder


def _evaluate(capsys, tmp_path: Path, root: Path | str, n_examples: int | None = 2) -> str:
    ckpt = write_checkpoint(tmp_path / "m.pt")
    cfg = write_config(tmp_path / "c.yaml", dataset="mnist", data_root=str(root), n_examples=n_examples, batch_size=4,
                       threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=[{"attack": "pgd", "params":
                                                                                 {"steps": 1}}], noise=[])
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg), "--no-progress",
                              "--out", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()
    return line


LEGACY = {
    # AttributeError: 'str' object has no attribute 'unsqueeze' (torchvision unpacked the dict's two keys)
    "a dict": ({"data": U8, "targets": LABELS}, "holds images a str, not"),
    # AttributeError: 'list' object has no attribute 'to'
    "labels a list": ((U8, [1, 2, 3, 4]), "holds labels a list for 4 images, not"),
    # read as labels [1, 2, 3, 0]: 1.5 -> 1, 2.7 -> 2, 0.2 -> 0
    "float labels": ((U8, torch.tensor([1.5, 2.7, 3.0, 0.2])),
                     "holds labels torch.float32 of shape (4,) for 4 images, not"),
    # read as labels [1, 1, 1, 1]
    "bool labels": ((U8, LABELS.bool()), "holds labels torch.bool of shape (4,) for 4 images, not"),
    # divided by 255 once more: images in [0, 0.004], evaluated as near-black pictures
    "float images": ((U8.float() / 255, LABELS), "holds images torch.float32 of shape (4, 28, 28), not"),
    # the next four named the raw files, which are fine: fetching them again left the same error
    "3 labels": ((U8, LABELS[:3]), "holds labels torch.int64 of shape (3,) for 4 images, not"),
    "label 30": ((U8, torch.tensor([1, 2, 30, 4])), "holds labels 1..30, not"),
    "28x20 images": ((U8[:, :, :20], LABELS), "holds images torch.uint8 of shape (4, 28, 20), not"),
    "no images": ((U8[:0], LABELS[:0]), "holds no images, not"),  # a RuntimeError traceback from detect.py before
}


@pytest.mark.parametrize("case", sorted(LEGACY))
def test_a_legacy_processed_file_of_other_contents_is_one_line_naming_it(case, tmp_path, capsys) -> None:
    payload, fragment = LEGACY[case]
    folder = _legacy(tmp_path / "root", payload)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", root=tmp_path / "root")
    assert str(info.value) == f"mnist: {folder / 'test.pt'} {fragment} uint8 images [N, 28, 28] and N labels 0..9; " \
        f"remove {folder} (torchvision's legacy cache, read instead of raw/) so that torchvision reads raw/"
    assert fragment in _evaluate(capsys, tmp_path, tmp_path / "root", n_examples=None)


@pytest.mark.parametrize("payload,reason", [
    ((U8, LABELS, LABELS), "too many values to unpack (expected 2)"),
    (b"not a torch file", "Weights only load failed"),  # an UnpicklingError traceback before an earlier round
])
def test_a_legacy_processed_file_torchvision_cannot_read_is_named_not_the_raw_folder(payload, reason,
                                                                                      tmp_path) -> None:
    folder = _legacy(tmp_path, (U8, LABELS))
    for name in ("training.pt", "test.pt"):
        if isinstance(payload, bytes):
            (folder / name).write_bytes(payload)
        else:
            torch.save(payload, folder / name)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "train", root=tmp_path)
    message = str(info.value)
    assert message.startswith(f"mnist: cannot read the data at {folder / 'training.pt'} (torchvision: {reason}")
    assert message.endswith(f"; remove {folder} (torchvision's legacy cache, read instead of raw/) so that "
                            "torchvision reads raw/") and "\n" not in message


def test_a_legacy_processed_file_of_torchvisions_types_still_reads_as_written(tmp_path) -> None:
    _legacy(tmp_path, (U8, LABELS))
    data = load_dataset("mnist", "test", root=tmp_path)
    assert torch.equal(data.x, U8.unsqueeze(1).float() / 255.0) and data.y.tolist() == [1, 2, 3, 4]


def test_a_root_no_file_system_takes_is_one_line_naming_data_root(tmp_path, capsys) -> None:
    """``OSError: [Errno 36] File name too long`` from Path.exists before, in the API, evaluate and train."""
    long_root = tmp_path / ("x" * 300)
    with pytest.raises(ConfigError, match=r"^data_root: '.*\.\.\.' holds a name of 300 bytes; file systems allow"):
        load_dataset("mnist", "test", root=long_root)
    assert "holds a name of 300 bytes" in _evaluate(capsys, tmp_path, long_root)
    line = run_error(capsys, ["train", "--dataset", "mnist", "--data-root", str(long_root), "--arch", "mlp",
                              "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "t.pt")])
    assert line.startswith("error: --data-root: ") and "holds a name of 300 bytes" in line
    with pytest.raises(ConfigError, match=r"^data_root: '.*' contains a NUL byte"):
        load_dataset("mnist", "test", root=f"{tmp_path}\0x")


def test_a_newline_in_the_root_stays_on_one_line(tmp_path, capsys) -> None:
    """The missing-data line was cut in two at the newline (``data not found at /tmp/a`` / ``b/MNIST/raw; ...``)."""
    root = tmp_path / "a\nb"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", root=root)
    assert str(info.value).startswith(f"mnist: data not found at {tmp_path}/a\\nb/MNIST/raw; pass --data-root")
    assert "a\\nb/MNIST/raw" in _evaluate(capsys, tmp_path, root)


@pytest.mark.parametrize("keyword,value,expected", [
    ("root", 123, "data_root: expected a folder path (str or pathlib.Path), got int 123"),  # TypeError from pathlib
    ("root", b"/data", "data_root: expected a folder path (str or pathlib.Path), got bytes b'/data'"),
    ("root", "", "data_root: expected a non-empty string, got ''"),  # read the working folder; the CLI refuses it
    ("download", "no", "download: expected True or False, got 'no'"),  # 'no' is true: torchvision would download
    ("download", None, "download: expected True or False, got None"),
    ("seed", 1.5, "split_seed: expected an integer, got 1.5"),  # split seed 1, silently
    ("seed", True, "split_seed: expected an integer, got True"),
    ("seed", "3", "split_seed: expected an integer, got '3'"),
    ("seed", None, "split_seed: expected an integer, got None"),  # TypeError from int()
    ("seed", float("nan"), "split_seed: expected an integer, got nan"),  # ValueError from int()
])
def test_api_arguments_of_another_type_are_config_errors(keyword, value, expected, tmp_path) -> None:
    _mnist_root(tmp_path)
    arguments = {"root": tmp_path, keyword: value}
    with pytest.raises(ConfigError) as info:
        load_dataset("digits" if keyword == "seed" else "mnist", "test", **arguments)
    assert str(info.value).startswith(expected), str(info.value)


def test_numpy_integer_split_seeds_are_the_same_split() -> None:
    three = load_dataset("digits", "test", seed=3)
    assert torch.equal(load_dataset("digits", "test", seed=np.int64(3)).y, three.y)
    assert not torch.equal(load_dataset("digits", "test", seed=0).y, three.y)


def test_a_raw_folder_of_gz_archives_only_says_to_decompress_them(tmp_path) -> None:
    """Before: "Dataset not found ...; fetch it again on a networked machine" although every file was there."""
    raw = _mnist_root(tmp_path)
    for path in list(raw.iterdir()):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", root=tmp_path)
    assert str(info.value).startswith(f"mnist: {raw} holds .gz archives but not the uncompressed idx files "
                                      f"torchvision reads; decompress them there (gunzip -k {raw}/*.gz)")
    for path in list(raw.iterdir()):
        path.with_name(path.name[:-3]).write_bytes(gzip.decompress(path.read_bytes()))
    assert len(load_dataset("mnist", "test", root=tmp_path)) == 4


class _WritesMarker:
    """Unpickling this object opens (creates) the marker file: proof that code from a data file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_cifar_root_whose_pickles_run_code_is_never_unpickled(tmp_path, capsys) -> None:
    folder = tmp_path / "root" / "cifar-10-batches-py"
    _write_cifar(folder, np.random.RandomState(0))
    marker = tmp_path / "code-ran"
    for name in ("test_batch", "batches.meta"):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "x": _WritesMarker(marker)}, f)
    with pytest.raises(DataError, match="fail torchvision's MD5 check against the official release"):
        load_dataset("cifar10", "test", root=tmp_path / "root")
    line = run_error(capsys, ["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "root"), "--arch",
                              "mlp", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "t.pt")])
    assert "fail torchvision's MD5 check" in line and not marker.exists()


def test_a_root_under_the_home_of_no_such_user_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    """``RuntimeError: Could not determine home directory.`` from Path.expanduser, a traceback in the API and CLI."""
    with pytest.raises(ConfigError, match=r"^data_root: cannot expand ~no-such-user-kwta/data \(no such user's home "
                                          r"folder\); give the folder's full path$"):
        load_dataset("mnist", "test", root="~no-such-user-kwta/data")
    line = run_error(capsys, ["train", "--dataset", "mnist", "--data-root", "~no-such-user-kwta/data", "--arch", "mlp",
                              "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "t.pt")])
    assert line == "error: --data-root: cannot expand ~no-such-user-kwta/data (no such user's home folder); give the " \
                   "folder's full path"
    monkeypatch.setenv("KWTA_ROBUST_DATA", "~no-such-user-kwta")
    with pytest.raises(ConfigError, match=r"^\$KWTA_ROBUST_DATA: cannot expand ~no-such-user-kwta \(no such user"):
        load_dataset("mnist", "test")


def _trust_cifar_files(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Declare the tiny files' own MD5s the official ones, so torchvision's checks pass and it reads them."""
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "train_list", [[f, _md5(folder / f)] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, _md5(folder / f)] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})


@pytest.mark.parametrize("case,batch,expected", [
    # read as images in [0, 0.004] (divided by 255 once more)
    ("float images", {"data": np.full((2, 3072), 0.5, np.float32), "labels": [1, 2]},
     "hold images of type float32 and labels of type int64"),
    # read as label 2
    ("label 2.5", {"data": np.zeros((2, 3072), np.uint8), "labels": [2.5, 1]},
     "hold images of type uint8 and labels of type float64"),
    # ValueError: too many dimensions 'str' (torch.as_tensor), a traceback
    ("text labels", {"data": np.zeros((2, 3072), np.uint8), "labels": ["1", "2"]},
     "hold images of type uint8 and labels of type <U1"),
])
def test_cifar_batches_of_other_types_past_the_md5_check_are_one_line(case, batch, expected, tmp_path,
                                                                      monkeypatch) -> None:
    """Only files with the official MD5s reach here, so these are defence in depth, not reachable by editing a file."""
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, np.random.RandomState(0))
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    _trust_cifar_files(folder, monkeypatch)
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", "test", root=tmp_path)
    assert str(info.value) == f"cifar10: the files at {folder} {expected}, not uint8 images and integer labels; " \
        "fetch the official files again (`kwta-robust train --download` or `download: true` in a training config, " \
        "or torchvision's download=True)"
    assert len(load_dataset("cifar10", "train", root=tmp_path)) == 10  # the untouched batches still read


def test_svhn_float_images_past_the_md5_check_are_one_line(tmp_path, monkeypatch) -> None:
    import scipy.io as scipy_io
    from torchvision.datasets import SVHN

    path = tmp_path / "test_32x32.mat"
    scipy_io.savemat(path, {"X": np.full((32, 32, 3, 2), 0.5), "y": np.array([[10], [3]], np.uint8)})
    url, name, _ = SVHN.split_list["test"]
    monkeypatch.setattr(SVHN, "split_list", {**SVHN.split_list, "test": [url, name, _md5(path)]})
    with pytest.raises(DataError, match=r"^svhn: the files at .*test_32x32\.mat hold images of type float64 and "
                                        r"labels of type int64, not uint8 images"):
        load_dataset("svhn", "test", root=tmp_path)


def test_a_cifar_split_of_no_images_past_the_md5_check_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    """Read as 0 samples before, then ``RuntimeError: max(): Expected reduction dim`` in evaluate's first step."""
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, np.random.RandomState(0))
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((0, 3072), np.uint8), "labels": []}, f, protocol=2)
    _trust_cifar_files(folder, monkeypatch)
    with pytest.raises(DataError, match=r"^cifar10 \(test\): the files at .*cifar-10-batches-py hold no images; they "
                                        r"are damaged — fetch them again \(`kwta-robust train --download`"):
        load_dataset("cifar10", "test", root=tmp_path)


class _Marks:
    """Unpickled, it creates the file named (``pathlib.Path.touch``): a stand-in for a payload that runs code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return Path.touch, (self.path,)


def test_a_legacy_cache_holding_code_is_refused_before_torchvision_unpickles_it(tmp_path, monkeypatch) -> None:
    """torchvision releases within the pins may load the legacy cache with a full unpickle (the installed one passes
    weights_only=True): with such a loader, a ``data_root`` from a shared config ran the file's code."""
    import torchvision.datasets.mnist as tv_mnist

    marker = tmp_path / "ran"
    folder = _legacy(tmp_path / "root", (U8, LABELS))
    for name in ("training.pt", "test.pt"):
        torch.save(_Marks(marker), folder / name)
    monkeypatch.setattr(tv_mnist.MNIST, "_load_legacy_data", lambda self: torch.load(
        folder / ("training.pt" if self.train else "test.pt"), weights_only=False))  # an older torchvision's read
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", root=tmp_path / "root")
    assert str(info.value) == (f"mnist: {folder / 'test.pt'} (torchvision's legacy cache, read instead of raw/) holds "
                               "Python objects that need pickle to load (it can run code), not cached tensors; "
                               f"remove {folder} so that torchvision reads raw/")
    assert not marker.exists()
