"""Mutation review 52 of kwta_robust.training.data_file: the split's sizes (``round``, not the floor, of
``test_fraction · N``) and the smallest splits it accepts, its samples in file order with their positions in the
file, the input normalization (a float64 mean, the population standard deviation; a constant channel's taken as 1),
the warning for a class without training samples, and the test-split path check (a file of two of the three arrays,
or one ``.npy`` array, is the user's)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from kwta_robust.data import TensorData
from kwta_robust.errors import ConfigError, DataError
from kwta_robust.training import TrainConfig
from kwta_robust.training.data_file import (channel_stats, check_test_split_path, load_file_splits, split_data,
                                            test_split_path as split_path_of)


def data(n: int) -> TensorData:
    """``n`` 1x2x2 samples whose positions in their file are ``100..100+n-1`` (another split's indices)."""
    return TensorData(torch.rand(n, 1, 2, 2), torch.arange(n) % 2, "d", 2, torch.arange(100, 100 + n))


def test_the_test_split_is_the_rounded_fraction_and_both_splits_keep_file_order_and_positions() -> None:
    train, test = split_data(data(10), 0.38, 1, "--data d")  # 3.8 test samples: 4
    assert (len(train), len(test)) == (6, 4)
    for part in (train, test):
        positions = part.indices.tolist()
        assert positions == sorted(positions) and set(positions) <= set(range(100, 110))


@pytest.mark.parametrize("n, fraction", [(10, 0.04), (4, 0.75)])  # no test sample; one training sample
def test_too_small_a_split_is_refused(n: int, fraction: float) -> None:
    with pytest.raises(DataError, match="too few"):
        split_data(data(n), fraction, 0, "--data d")


def test_the_normalization_is_the_population_deviation_and_a_constant_channel_is_not_scaled() -> None:
    x = torch.zeros(2, 2, 1, 1)
    x[1, 0] = 1.0  # channel 0: 0 and 1; channel 1: 0 and 0
    assert channel_stats(x) == ([0.5, 0.0], [0.5, 1.0])
    third = torch.tensor([0.0, 0.0, 0.1]).view(3, 1, 1, 1)  # float32 values, their mean taken in float64
    assert channel_stats(third)[0] == [float(np.float32(0.1)) / 3]


def test_a_class_without_training_samples_is_warned_of(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "few.npz"
    y = np.array([0] * 9 + [2])  # class 1 never; class 2 once, in whichever split
    np.savez(path, x=np.zeros((10, 1, 2, 2), np.float32), y=y)
    cfg = TrainConfig.from_dict({"dataset": {"file": str(path)}, "test_fraction": 0.2})
    with caplog.at_level(logging.WARNING, logger="kwta_robust.training.data_file"):
        load_file_splits(cfg)
    assert "classes (labels 0..2) have no training sample (first: 1)" in caplog.text


def test_a_file_of_two_of_the_three_arrays_at_the_test_split_path_is_refused(tmp_path: Path) -> None:
    split = split_path_of(tmp_path / "m.pt")
    np.savez(split, x=np.zeros((1, 1, 2, 2)), y=np.zeros(1))
    with pytest.raises(ConfigError, match="not a test split"):
        check_test_split_path(tmp_path / "m.pt", tmp_path / "data.npz")
    np.savez(split, x=np.zeros((1, 1, 2, 2)), y=np.zeros(1), indices=np.zeros(1))
    check_test_split_path(tmp_path / "m.pt", tmp_path / "data.npz")  # a split train wrote: replaced
    np.save(tmp_path / "m.test.npy", np.zeros(3))
    (tmp_path / "m.test.npy").replace(split)  # one .npy array under the split's name
    with pytest.raises(ConfigError, match="not a test split"):
        check_test_split_path(tmp_path / "m.pt", tmp_path / "data.npz")
