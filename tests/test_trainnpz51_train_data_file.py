"""``kwta-robust train --data FILE``: training on evaluate's data-file format (an .npz/.pt of ``x`` ``[N, C, H, W]``
and ``y`` ``[N]``), split by a seeded permutation into training and test samples; the checkpoint's training
metadata names the file and its SHA-256, and the checkpoint evaluates with ``evaluate --data`` on the same file.
Every bad input is one ``error:`` line. Before this, ``train`` had no ``--data`` (argparse refused it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
import torch

from kwta_robust import cli
from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.data import TensorData
from kwta_robust.training import TrainConfig, default_out
from kwta_robust.training.data_file import split_data

TRAIN = ["--arch", "mlp", "--arch-arg", "hidden=[16]", "--epochs", "2", "--batch-size", "16"]


def _tiny(path: Path, n: int = 40, classes: int = 3, seed: int = 0) -> Path:
    """``n`` 1x6x6 uint8 images whose label is the lit row band (a task an MLP learns in a few steps)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 60, size=(n, 1, 6, 6)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, 0, 2 * label:2 * label + 2, :] = 230
    np.savez(path, x=x, y=y.astype(np.int64))
    return path


def _error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_train_on_a_file_records_it_and_evaluates_with_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _tiny(tmp_path / "tiny.npz")
    out = tmp_path / "m.pt"
    assert cli.main(["train", "--data", str(data), "--test-fraction", "0.25", *TRAIN, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"(10 {data} test samples) -> {out}" in printed
    meta = load_checkpoint(out).metadata
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert meta["training"]["dataset"] == {"file": str(data.resolve()), "sha256": digest}
    assert meta["dataset"] == str(data.resolve())
    assert (meta["num_train"], meta["num_test"], meta["training"]["test_fraction"]) == (30, 10, 0.25)
    spec = load_checkpoint(out).spec
    assert spec is not None and (spec.kwargs["num_classes"], spec.kwargs["in_channels"]) == (3, 1)
    record = tmp_path / "r.json"
    assert cli.main(["-q", "evaluate", str(out), "--config", "eval_configs/quick.yaml", "--data", str(data),
                     "--n-examples", "4", "--out", str(record)]) == 0
    evaluated = json.loads(record.read_text())
    assert evaluated["config"]["dataset"] == {"file": str(data.resolve()), "sha256": digest}


def test_the_test_split_is_written_as_a_file_that_evaluate_reads_alone(tmp_path: Path) -> None:
    """The whole file holds the training samples too: train writes the held-out split as OUT.test.npz (its path and
    SHA-256 in the checkpoint), and evaluate --data on it attacks those samples alone, the values training read."""
    data = _tiny(tmp_path / "tiny.npz")
    out = tmp_path / "m.pt"
    assert cli.main(["-q", "train", "--data", str(data), "--test-fraction", "0.25", *TRAIN, "--out", str(out)]) == 0
    held = tmp_path / "m.pt.test.npz"  # named by the whole file name: m.pth has its own
    meta = load_checkpoint(out).metadata
    assert meta["test_split_file"] == {"file": str(held), "sha256": hashlib.sha256(held.read_bytes()).hexdigest()}
    with np.load(held) as npz:
        x, y, indices = npz["x"], npz["y"], npz["indices"]
    with np.load(data) as npz:
        whole_x, whole_y = npz["x"], npz["y"]
    train, test = split_data(TensorData(torch.from_numpy(whole_x).float() / 255, torch.from_numpy(whole_y), "tiny", 3,
                                        torch.arange(40)), 0.25, 0, "tiny")
    assert len(y) == 10 and indices.tolist() == test.indices.tolist()
    assert np.array_equal(x, whole_x[indices] / np.float32(255)) and np.array_equal(y, whole_y[indices])
    record = tmp_path / "held.json"
    assert cli.main(["-q", "evaluate", str(out), "--config", "eval_configs/quick.yaml", "--data", str(held),
                     "--n-examples", "10", "--out", str(record)]) == 0
    assert json.loads(record.read_text())["dataset"]["n"] == 10


def test_the_split_is_seeded_disjoint_and_in_the_recorded_sizes() -> None:
    x = torch.rand(20, 1, 4, 4)
    data = TensorData(x, torch.arange(20) % 2, "d", 2, torch.arange(20))
    train, test = split_data(data, 0.3, 5, "--data d")
    again, test_again = split_data(data, 0.3, 5, "--data d")
    _, other = split_data(data, 0.3, 6, "--data d")
    assert (len(train), len(test)) == (14, 6)
    assert torch.equal(test.indices, test_again.indices) and not torch.equal(test.indices, other.indices)
    assert sorted(train.indices.tolist() + test.indices.tolist()) == list(range(20))
    assert torch.equal(train.x, x[train.indices]) and torch.equal(test.y, data.y[test.indices])


def test_the_seed_and_fraction_come_from_the_config_and_the_file_names_the_default_out(tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict({"dataset": {"file": str(tmp_path / "faces.npz")}, "split_seed": 3})
    assert cfg.dataset_name == str(tmp_path / "faces.npz") and cfg.test_fraction == 0.2
    assert default_out(cfg) == Path("runs") / "faces-cnn-relu-standard-seed0.pt"
    assert default_out(TrainConfig()) == Path("runs") / "mnist5k-cnn-relu-standard-seed0.pt"
    assert "test_fraction" in cfg.to_dict() and "test_fraction" not in TrainConfig().to_dict()  # sweep cell hashes kept


def test_a_relative_file_in_a_yaml_config_is_taken_from_its_folder(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    _tiny(tmp_path / "tiny.npz")
    config = tmp_path / "train.yaml"
    config.write_text("dataset: {file: tiny.npz}\narch: mlp\narch_kwargs: {hidden: [8]}\nepochs: 1\nbatch_size: 8\n")
    out = tmp_path / "y.pt"
    assert cli.main(["train", "--config", str(config), "--out", str(out)]) == 0
    assert load_checkpoint(out).metadata["training"]["dataset"]["file"] == str((tmp_path / "tiny.npz").resolve())


def _bad_file(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case, expected", [
    ("missing", "file not found; check the path"),
    ("three_dims", "x must be [N, C, H, W], got shape (12, 6, 6) (add a channel axis"),
    ("negative_label", "negative label -1; labels are class indices"),
    ("one_class", "every label is 0; a classifier needs at least 2 classes"),
    ("length_mismatch", "x holds 12 samples but y holds 11 labels"),
])
def test_each_bad_file_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture, case: str,
                                         expected: str) -> None:
    x, y = np.full((12, 1, 6, 6), 0.5, np.float32), np.arange(12) % 2
    path = {
        "missing": lambda: tmp_path / "absent.npz",
        "three_dims": lambda: _bad_file(tmp_path, x=x[:, 0], y=y),
        "negative_label": lambda: _bad_file(tmp_path, x=x, y=y - 1),
        "one_class": lambda: _bad_file(tmp_path, x=x, y=np.zeros(12, np.int64)),
        "length_mismatch": lambda: _bad_file(tmp_path, x=x, y=y[:11]),
    }[case]()
    out = tmp_path / "m.pt"
    err = _error(capsys, ["train", "--data", str(path), *TRAIN, "--out", str(out)])
    assert err.startswith(f"error: --data {path.resolve()}: ") and expected in err, err
    assert not out.exists()


def test_too_few_samples_names_the_fraction(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _bad_file(tmp_path, x=np.full((3, 1, 6, 6), 0.5, np.float32), y=np.array([0, 1, 0]))
    err = _error(capsys, ["train", "--data", str(path), "--test-fraction", "0.5", *TRAIN, "--out",
                          str(tmp_path / "m.pt")])
    assert "3 samples are too few for test_fraction 0.5 (1 to train on, 2 to test on)" in err
    assert "--test-fraction" in err


@pytest.mark.parametrize("argv, expected", [
    (["--dataset", "digits"], "error: --data and --dataset: give one"),
    (["--test-fraction", "1"], "error: --test-fraction: must be in (0, 1)"),  # the flag gave it
    (["--data-root", "somewhere"], "error: --data-root: not used with dataset: {file: ...}"),
    (["--download"], "error: --download: not used with dataset: {file: ...}"),
])
def test_conflicting_flags_are_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
                                              expected: str) -> None:
    data = _tiny(tmp_path / "tiny.npz")
    err = _error(capsys, ["train", "--data", str(data), *argv, *TRAIN, "--out", str(tmp_path / "m.pt")])
    assert err.startswith(expected), err


def test_a_pinned_sha256_that_differs_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _tiny(tmp_path / "tiny.npz")
    config = tmp_path / "train.yaml"
    config.write_text(f"dataset: {{file: {data}, sha256: {'a' * 64}}}\narch: mlp\nepochs: 1\n")
    err = _error(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "m.pt")])
    assert "dataset.sha256:" in err and "the config pins aaaaaa" in err


def test_a_sweep_training_on_a_file_is_refused_naming_train_data(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    data = _tiny(tmp_path / "tiny.npz")
    sweep = yaml.safe_load(Path("eval_configs/sweep_mnist5k_3x3.yaml").read_text())
    sweep["train"] = {**sweep["train"], "dataset": {"file": str(data)}}
    sweep["eval"] = {**yaml.safe_load(Path("eval_configs/quick.yaml").read_text()), "dataset": {"file": str(data)}}
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep))
    err = _error(capsys, ["sweep", str(config), "--out-dir", str(tmp_path / "out")])
    assert err.startswith("error: train.dataset: a data file ({file: ...}) is trained on by `kwta-robust train --data")
    assert not (tmp_path / "out").exists()
