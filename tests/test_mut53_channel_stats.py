"""Mutation review of attacks/channel_stats.py: each channel statistic's value on a small map (the score BPDA's
whole-channel relaxation takes), the unknown name refused, and which statistic ``ranking_statistic`` reads and which
it names as ties (the first of CHANNEL_STATISTICS on equal fractions, exact equality only)."""

from __future__ import annotations

import pytest
import torch

from attacks.channel_stats import CHANNEL_STATISTICS, channel_statistic, ranking_statistic

#: ``[N=1, C=2, 2, 2]``: a signed channel and a non-negative one.
X = torch.tensor([[[[3.0, -4.0], [0.0, -1.0]], [[1.0, 1.0], [2.0, 0.0]]]])
VALUES = {"max": [3.0, 2.0], "mean": [-0.5, 1.0], "abs-mean": [2.0, 1.0], "l2-norm": [26 ** 0.5, 6 ** 0.5]}


@pytest.mark.parametrize("statistic", CHANNEL_STATISTICS)
def test_each_statistic_on_a_small_map(statistic: str) -> None:
    value = channel_statistic(X, statistic)
    assert value.shape == (1, 2)
    assert torch.allclose(value, torch.tensor([VALUES[statistic]]), rtol=1e-6, atol=0.0), (statistic, value)


def test_the_statistics_their_order_and_an_unknown_name() -> None:
    assert CHANNEL_STATISTICS == ("max", "mean", "abs-mean", "l2-norm")
    with pytest.raises(ValueError, match="unknown channel statistic 'median'; use one of max, mean, abs-mean, l2-norm"):
        channel_statistic(X, "median")


def test_the_statistic_read_and_its_ties() -> None:
    assert ranking_statistic({"max": 0.5, "mean": 1.0, "abs-mean": 1.0, "l2-norm": 0.9}) == ("mean", ("abs-mean",))
    assert ranking_statistic({"max": 1.0, "mean": 1.0, "abs-mean": 1.0, "l2-norm": 1.0}) == (
        "max", ("mean", "abs-mean", "l2-norm"))
    assert ranking_statistic({"max": 0.98, "mean": 0.2, "abs-mean": 0.99, "l2-norm": 1.0}) == ("l2-norm", ())
    assert ranking_statistic({"max": 0.0, "mean": 0.7, "abs-mean": 0.0, "l2-norm": 0.7}) == ("mean", ("l2-norm",))
