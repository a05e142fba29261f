"""``train --data FILE`` writes the test split beside the checkpoint. It was named by the checkpoint's stem
(``m.test.npz``): ``--out m.pt`` and ``--out m.pth`` in one folder wrote the same file, the second replacing the
first's split, so evaluating ``m.pt`` on "its" test file attacked ``m.pth``'s training samples. It is now named by the
whole file name (``m.pt.test.npz``). It was also written before training began: a failed or interrupted training left
a split without a checkpoint; it is now written once the checkpoint is."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kwta_robust import cli
from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.errors import DataError
from kwta_robust.training import run as training_run
from test_trainnpz51_train_data_file import _tiny  # a tiny data file

TRAIN = ["--arch", "mlp", "--arch-arg", "hidden=[8]", "--epochs", "1", "--batch-size", "16", "--threads", "1"]


def test_two_checkpoints_of_one_stem_keep_their_own_test_splits(tmp_path: Path) -> None:
    data = _tiny(tmp_path / "tiny.npz")
    for name, seed in (("m.pt", "0"), ("m.pth", "1")):  # other split seeds: other held-out samples
        out = tmp_path / name
        assert cli.main(["-q", "train", "--data", str(data), "--split-seed", seed, *TRAIN, "--out", str(out)]) == 0
    held = {name: load_checkpoint(tmp_path / name).metadata["test_split_file"] for name in ("m.pt", "m.pth")}
    for meta in held.values():  # each split is still the one its checkpoint names (m.pt's was replaced)
        assert meta["sha256"] == hashlib.sha256(Path(meta["file"]).read_bytes()).hexdigest()
    assert held["m.pt"]["file"] != held["m.pth"]["file"]
    assert held["m.pt"]["file"] == str((tmp_path / "m.pt.test.npz").resolve())
    assert not (tmp_path / "m.test.npz").exists()


@pytest.mark.parametrize("stop, status", [(KeyboardInterrupt, 130), (DataError("a failure in training"), 2)])
def test_a_training_that_stops_leaves_neither_checkpoint_nor_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture, stop: BaseException,
                                                                   status: int) -> None:
    def train_model(*args: object, **kwargs: object) -> None:
        raise stop
    monkeypatch.setattr(training_run, "train_model", train_model)
    data = _tiny(tmp_path / "tiny.npz")
    assert cli.main(["-q", "train", "--data", str(data), *TRAIN, "--out", str(tmp_path / "m.pt")]) == status
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.npz"]
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("interrupted: training does not resume" if status == 130
                                       else "error: a failure in training") in err
