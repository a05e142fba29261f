"""Mutation review 52 of kwta_robust.selection's integer-key path and its fallbacks: a row whose k-th largest is
``+0`` keeps the integer partition's value (only keys ``< 0``, ``-0`` and below, take the float partition); a batch
of no rows gives no threshold (no host ``max`` of nothing); ``kth_largest`` refuses a ``bool`` k, a k out of range
and a non-float array on its fast path too, with one :class:`~kwta_robust.errors.ConfigError` line (Xiao et al.,
ICLR 2020: the kWTA threshold, ``[rows, n]``)."""

from __future__ import annotations

import numpy as np
import pytest

from kwta_robust.errors import ConfigError
from kwta_robust.selection import introselect_kth_largest, kth_largest


def test_a_row_whose_kth_largest_is_plus_zero_keeps_the_integer_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    partition = np.partition
    monkeypatch.setattr(np, "partition", lambda a, *args, **kw: seen.append(a.dtype) or partition(a, *args, **kw))
    values = np.zeros((3, 12), np.float32)
    values[:, :3] = [3.0, 2.0, 1.0]  # the 4th largest of each row is +0
    assert np.array_equal(introselect_kth_largest(values, 4, 1), np.zeros((3, 1), np.float32))
    assert seen == [np.dtype(np.int32)]  # no float pass after the integer one


@pytest.mark.parametrize("values, k", [(np.ones((2, 4), np.float32), True), (np.ones((2, 4), np.float32), 0),
                                       (np.ones((2, 4), np.float32), 5), (np.ones((2, 4), np.int32), 1)])
def test_a_bad_k_or_dtype_is_one_config_error(values: np.ndarray, k: object) -> None:
    with pytest.raises(ConfigError, match="^kth_largest: (k must be an integer in \\[1, 4\\]|values must be a float)"):
        kth_largest(values, k, 1)


def test_a_batch_of_no_rows_gives_no_threshold() -> None:
    for k in (1, 2):  # the integer path (2k < n) and the float one
        assert introselect_kth_largest(np.zeros((0, 5), np.float32), k, 1).shape == (0, 1)
