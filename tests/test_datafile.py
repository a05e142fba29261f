"""Evaluation data from a file (``--data FILE``, ``dataset: {file: PATH}``): .pt and .npz read safely, the record
names the file and its SHA-256, the sample selection is the registered sets', every bad file is one ``error:``
line; and foolbox's bundled samples as offline data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.data import load_dataset
from kwta_robust.datafile import load_data_file
from kwta_robust.errors import ConfigError, DataError
from kwta_robust.results import load_record
from test_cli_eval import run_error, write_checkpoint, write_config

N = 12


def images(n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).rand(n, 1, 28, 28).astype(np.float32)


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "mlp.pt")  # 1×28×28 → 10 classes


@pytest.fixture()
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path / "c.yaml", n_examples=5, threats=[{"norm": "linf", "epsilons": [0.1]}],
                        attacks=["fgsm"], noise=[])


def evaluate(ckpt: Path, cfg: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["evaluate", str(ckpt), "--config", str(cfg), "--data", str(data), "--out", str(out), "--no-progress",
                 *extra])


def test_pt_and_npz_files_evaluate_and_the_record_names_file_and_hash(tmp_path, ckpt, cfg, capsys) -> None:
    from kwta_robust.checkpoint import file_sha256

    x = images()
    y = np.arange(N) % 10
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y), "note": torch.tensor(1)}, tmp_path / "d.pt")
    np.savez(tmp_path / "d.npz", x=np.round(x * 255).astype(np.uint8), y=y.astype(np.int32))
    for name in ("d.pt", "d.npz"):
        assert evaluate(ckpt, cfg, tmp_path / name, tmp_path / f"{name}.json") == 0, capsys.readouterr().err
        record = load_record(tmp_path / f"{name}.json")
        assert record.dataset["name"] == str((tmp_path / name).resolve()) and record.dataset["num_classes"] == 10
        assert record.config["dataset"] == {"file": str((tmp_path / name).resolve()),
                                            "sha256": file_sha256(tmp_path / name)}
        # the seeded permutation of the registered sets: the first n of randperm(N, seed)
        expected = torch.randperm(N, generator=torch.Generator().manual_seed(0))[:5].tolist()
        assert record.dataset["indices"] == expected and record.clean.n == 5
    data = load_data_file(tmp_path / "d.npz")
    assert data.x.dtype == torch.float32 and \
        torch.equal(data.x, torch.from_numpy(np.round(x * 255).astype(np.uint8)) / 255.0)
    assert data.y.dtype == torch.int64 and data.num_classes == 10


def test_a_changed_file_does_not_resume_an_old_record(tmp_path, ckpt, cfg, capsys) -> None:
    np.savez(tmp_path / "d.npz", x=images(), y=np.arange(N) % 10)
    assert evaluate(ckpt, cfg, tmp_path / "d.npz", tmp_path / "r.json") == 0
    np.savez(tmp_path / "d.npz", x=images(seed=1), y=np.arange(N) % 10)
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg), "--data", str(tmp_path / "d.npz"),
                              "--out", str(tmp_path / "r.json"), "--no-progress"])
    assert "holds a record of another config (dataset.sha256: " in line
    assert line.endswith(" now); use a new --out or --no-resume")


def test_yaml_file_key_relative_path_and_sha_pin(tmp_path, ckpt, capsys) -> None:
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "d.npz", x=images(), y=np.arange(N) % 10)
    cfg = write_config(tmp_path / "c.yaml", dataset={"file": "data/d.npz"}, n_examples=4,
                       threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["fgsm"], noise=[])
    loaded = EvalConfig.from_yaml(cfg)  # relative to the YAML's folder, not the working directory
    assert loaded.data_file.file == str((tmp_path / "data" / "d.npz").resolve()) and \
        loaded.dataset == loaded.data_file.file
    assert main(["evaluate", str(ckpt), "--config", str(cfg), "--out", str(tmp_path / "r.json"), "--no-progress"]) == 0
    pinned = write_config(tmp_path / "p.yaml", dataset={"file": "data/d.npz", "sha256": "0" * 64}, attacks=[], noise=[],
                          threats=[])
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(pinned), "--no-progress"])
    assert "dataset.sha256:" in line and "the config pins 000" in line
    with pytest.raises(ConfigError, match="split: not used with dataset: {file"):
        EvalConfig.from_dict({"dataset": {"file": "d.npz"}, "split": "train"})
    with pytest.raises(ConfigError, match="dataset: unknown key 'path'"):
        EvalConfig.from_dict({"dataset": {"path": "d.npz"}})
    with pytest.raises(ConfigError, match="dataset.sha256: expected 64 hex digits"):
        EvalConfig.from_dict({"dataset": {"file": "d.npz", "sha256": "abc"}})


def _write(path: Path, **arrays) -> Path:
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        torch.save(arrays, path)
    return path


BAD_FILES = {
    "missing file": (lambda p: p / "nope.npz", "file not found"),
    "a folder": (lambda p: _folder(p / "data.pt"), "is a folder; give the .pt or .npz file holding x and y"),
    "extension": (lambda p: _touch(p / "d.csv"), "unsupported extension '.csv'"),
    "no x": (lambda p: _write(p / "d.npz", images=images(), y=np.zeros(N, int)), "no 'x' entry (found images, y)"),
    "no y": (lambda p: _write(p / "d.pt", x=torch.rand(N, 1, 28, 28)), "no 'y' entry"),
    "3-d x": (lambda p: _write(p / "d.npz", x=images()[:, 0], y=np.zeros(N, int)), "add a channel axis"),
    "channels last": (lambda p: _write(p / "d.npz", x=images().transpose(0, 2, 3, 1), y=np.zeros(N, int)),
                      "channels-last"),
    "length mismatch": (lambda p: _write(p / "d.npz", x=images(), y=np.zeros(N - 1, int)),
                        "holds 12 samples but y holds 11"),
    "out of range": (lambda p: _write(p / "d.npz", x=images() * 255, y=np.zeros(N, int)), "divide 0..255 images"),
    # mean/std-normalized images were told to "divide 0..255 images by 255", which would not bring them into [0, 1]
    "normalized": (lambda p: _write(p / "d.npz", x=(images() - 0.1307) / 0.3081, y=np.zeros(N, int)),
                   "normalized by mean/std?); store the raw images in [0, 1] (x * std + mean) and normalize inside"),
    "nan": (lambda p: _write(p / "d.npz", x=images() * np.nan, y=np.zeros(N, int)), "NaN or infinite"),
    "int64 x": (lambda p: _write(p / "d.npz", x=(images() * 255).astype(np.int64), y=np.zeros(N, int)),
                "x has dtype int64"),
    "float labels": (lambda p: _write(p / "d.npz", x=images(), y=np.zeros(N, np.float32)), "labels must be integers"),
    "2-d labels": (lambda p: _write(p / "d.npz", x=images(), y=np.zeros((N, 1), int)), "y must be [N] class indices"),
    "negative label": (lambda p: _write(p / "d.npz", x=images(), y=-np.ones(N, int)), "negative label -1"),
    "label >= classes": (lambda p: _write(p / "d.npz", x=images(), y=np.full(N, 10)),
                         "label 10 but the model has 10 classes"),
    "empty": (lambda p: _write(p / "d.npz", x=images()[:0], y=np.zeros(0, int)), "x holds no samples"),
    "object array": (lambda p: _write(p / "d.npz", x=np.array([None] * N, dtype=object), y=np.zeros(N, int)),
                     "needs pickle"),
    "numpy inside .pt": (lambda p: _write(p / "d.pt", x=images(), y=np.zeros(N, int)), "need pickle; save tensors"),
    "not a dict": (lambda p: _save(p / "d.pt", torch.rand(3)), "expected a dict with 'x' and 'y'"),
    "corrupt": (lambda p: _bytes(p / "d.npz"), "not a readable .npz"),
    # random bytes named .pt were said to hold "Python objects (e.g. NumPy arrays) that need pickle"
    "random bytes .pt": (lambda p: _random(p / "d.pt"), "corrupt or not a data file (not a readable PyTorch file)"),
    "not a zip .pt": (lambda p: _bytes(p / "d.pt"), "corrupt or not a data file"),
    "wrong input shape": (lambda p: _write(p / "d.npz", x=images()[:, :, :20, :20], y=np.zeros(N, int)),
                          "the model cannot take inputs of shape (1, 20, 20)"),
}


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _touch(path: Path) -> Path:
    path.write_text("x,y\n")
    return path


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _random(path: Path) -> Path:
    path.write_bytes(np.random.RandomState(0).bytes(4096))
    return path


def _bytes(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 not really a zip")
    return path


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants:UserWarning")  # torch's, on every sparse load
def test_a_sparse_x_is_read_dense(tmp_path, ckpt, cfg, capsys) -> None:
    """x saved with x.to_sparse() (before: a raw NotImplementedError traceback from the range check) evaluates
    like the dense file."""
    x, y = torch.from_numpy(images()), torch.zeros(N, dtype=torch.long)
    records = []
    for name, data in (("dense", x), ("sparse", x.to_sparse())):
        torch.save({"x": data, "y": y}, tmp_path / f"{name}.pt")
        assert main(["evaluate", str(ckpt), "--config", str(cfg), "--data", str(tmp_path / f"{name}.pt"),
                     "--no-progress", "--out", str(tmp_path / f"{name}.json")]) == 0, capsys.readouterr().err
        records.append(load_record(tmp_path / f"{name}.json"))
    assert records[0].clean_flags == records[1].clean_flags
    assert [r.flags for r in records[0].results] == [r.flags for r in records[1].results]


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_every_bad_file_is_one_error_line(case, tmp_path, ckpt, cfg, capsys) -> None:
    make, expected = BAD_FILES[case]
    path = make(tmp_path)
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg), "--data", str(path), "--no-progress",
                              "--out", str(tmp_path / "r.json")])
    assert expected in line, line
    assert not (tmp_path / "r.json").exists()


def test_data_with_data_root_and_on_compare(tmp_path, ckpt, cfg, capsys) -> None:
    np.savez(tmp_path / "d.npz", x=images(), y=np.full(N, 11))
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg), "--data", str(tmp_path / "d.npz"),
                              "--data-root", str(tmp_path)])
    assert line == "error: --data-root: not used with --data (the file is the data); drop one of them"
    other = write_checkpoint(tmp_path / "other.pt", seed=1)
    line = run_error(capsys, ["compare", str(ckpt), str(other), "--config", str(cfg), "--data", str(tmp_path / "d.npz"),
                              "--out-dir", str(tmp_path / "cmp"), "--no-progress"])
    assert "label 11 but the model has 10 classes" in line


def test_foolbox_samples_are_offline_data_sets_with_true_labels() -> None:
    from foolbox.utils import _samples  # the function foolbox.utils.samples calls once it has a model's settings

    for name, prefix, shape in (("mnist-samples", "mnist", (1, 28, 28)), ("cifar10-samples", "cifar10", (3, 32, 32)),
                                ("imagenet-samples", "imagenet", (3, 224, 224))):
        data = load_dataset(name, "test")
        x, y = _samples(prefix, 0, 20, shape[1:], "channels_first", (0, 1))
        assert data.input_shape == shape and len(data) == 20 and data.x.dtype == torch.float32
        assert torch.equal(data.x, torch.from_numpy(x)) and data.y.tolist() == y.tolist()
    assert load_dataset("mnist-samples", "test").y[:4].tolist() == [7, 2, 1, 0]
    assert load_dataset("imagenet-samples", "test").num_classes == 1000
    with pytest.raises(DataError, match="test images only"):
        load_dataset("cifar10-samples", "train")
