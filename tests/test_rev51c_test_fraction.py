"""``test_fraction`` (``--test-fraction``) splits a data file (``dataset: {file: ...}``, ``--data FILE``) alone: a
registered data set has its own test split, so the key with one is a one-line error naming it, where it was
accepted and silently ignored (and left out of the checkpoint's ``training``). A data file's default stays 0.2, and a
registered set's ``to_dict`` (its sweep cell's identity) still holds no ``test_fraction``."""

from __future__ import annotations

import pytest

from kwta_robust import cli
from kwta_robust.errors import ConfigError
from kwta_robust.training import TrainConfig


def test_test_fraction_with_a_registered_data_set_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^test_fraction: only used with a data file .*'mnist5k'"):
        TrainConfig.from_dict({"dataset": "mnist5k", "test_fraction": 0.3})
    assert "test_fraction" not in TrainConfig().to_dict()  # a registered set's config (its sweep cell) as before
    assert TrainConfig.from_dict({"dataset": {"file": "x.npz"}}).to_dict()["test_fraction"] == 0.2
    assert TrainConfig.from_dict({"dataset": {"file": "x.npz"}, "test_fraction": 0.5}).test_fraction == 0.5


def test_the_flag_with_dataset_is_one_error_line(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["train", "--dataset", "mnist5k", "--test-fraction", "0.5", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --test-fraction: ") and len(err.splitlines()) == 1  # the flag gave it

