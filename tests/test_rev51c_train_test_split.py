"""``train --data FILE`` writes its test split beside the checkpoint (``OUT.test.npz``): it never writes it over the
data file it trains on nor over a file of the user's (train --out overwrites only its own checkpoints, and so only its
own test splits), and the checkpoint's ``test_split_file`` names it by its absolute path, as ``training.dataset``
and an evaluation record's ``--data`` name files. Before this, ``train --data runs/a.test.npz --out runs/a.pt``
replaced the data file by a part of itself, a user's ``OUT.test.npz`` was overwritten silently, and a relative
``--out`` left a path relative to the folder train ran in."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kwta_robust import cli
from kwta_robust.checkpoint import load_checkpoint
from test_trainnpz51_train_data_file import _error, _tiny  # a tiny data file; one error line

TRAIN = ["--arch", "mlp", "--arch-arg", "hidden=[8]", "--epochs", "1", "--batch-size", "16", "--threads", "1"]


def test_the_test_split_is_never_written_over_the_data_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _tiny(tmp_path / "a.pt.test.npz")  # where the test split of --out a.pt goes
    before = data.read_bytes()
    err = _error(capsys, ["train", "--data", str(data), *TRAIN, "--out", str(tmp_path / "a.pt")])
    assert "--data" in err and str(data) in err
    assert data.read_bytes() == before and not (tmp_path / "a.pt").exists()


def test_a_file_of_the_users_at_the_test_split_path_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _tiny(tmp_path / "tiny.npz")
    out = tmp_path / "m.pt"
    argv = ["-q", "train", "--data", str(data), *TRAIN, "--out", str(out)]
    assert cli.main(argv) == 0 and cli.main(argv) == 0  # its own test split, from the run before, is replaced
    theirs = _tiny(tmp_path / "m.pt.test.npz", seed=1)  # the user's own data (x and y): not a split train wrote
    before = theirs.read_bytes()
    err = _error(capsys, argv)
    assert "--out" in err and str(theirs) in err and theirs.read_bytes() == before
    notes = tmp_path / "m.pt.test.npz"
    notes.write_text("my notes\n")
    assert "--out" in _error(capsys, argv) and notes.read_text() == "my notes\n"


def test_the_checkpoint_names_its_test_split_by_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    _tiny(tmp_path / "tiny.npz")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["-q", "train", "--data", "tiny.npz", *TRAIN, "--out", "runs/m.pt"]) == 0
    held = (tmp_path / "runs" / "m.pt.test.npz").resolve()
    meta = load_checkpoint(tmp_path / "runs" / "m.pt").metadata
    assert meta["test_split_file"] == {"file": str(held), "sha256": hashlib.sha256(held.read_bytes()).hexdigest()}
    assert meta["training"]["dataset"]["file"] == str((tmp_path / "tiny.npz").resolve())
