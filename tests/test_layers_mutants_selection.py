"""Mutation round on the kWTA threshold's selection (:mod:`kwta_robust.selection`): k-th largest values, sample
columns and the host check written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

import kwta_robust.selection as selection
from kwta_robust.selection import (
    introselect_kth_largest,
    kth_largest,
    partition_is_slow,
    sample_columns,
    sampled_kth_largest,
)

NAN = float("nan")


def test_introselect_kth_largest_by_hand() -> None:
    v = np.array([[3.0, 1.0, 2.0], [5.0, 5.0, 4.0]])
    assert np.array_equal(introselect_kth_largest(v, 2, 1), [[2.0], [5.0]])
    assert np.array_equal(introselect_kth_largest(v, 3, -1), [[1.0], [4.0]])
    assert np.array_equal(introselect_kth_largest(v, 1, 0), [[5.0, 5.0, 4.0]])
    assert np.array_equal(introselect_kth_largest(v, 2, 0), [[3.0, 1.0, 2.0]])
    nan_row = np.array([[1.0, NAN, 3.0, 2.0]])
    for k in (1, 2, 4):  # NaN ranks largest: a row holding one gives NaN for every k
        assert np.isnan(introselect_kth_largest(nan_row, k, 1)).all()


def test_kth_largest_keeps_the_axis_in_place() -> None:
    v = np.arange(24.0).reshape(2, 3, 4)
    out = kth_largest(v, 2, 1)
    assert out.shape == (2, 1, 4) and np.array_equal(out[:, 0], [[4.0, 5.0, 6.0, 7.0], [16.0, 17.0, 18.0, 19.0]])


def test_sample_columns_by_hand() -> None:
    # p = first integer >= floor(0.618 n) coprime to n: n = 10 → 6 shares 2, so 7; n = 12 → 7
    assert sample_columns(10, 4).tolist() == [0, 7, 4, 1]
    assert sample_columns(12, 5).tolist() == [0, 7, 2, 9, 4]


def _shuffled_ramps(rows: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(rows)]).astype(np.float32)


@pytest.mark.parametrize("k", [1, 2, 100, 1000, 2047, 2048])
def test_sampled_bracket_on_permutations_by_hand(k: int) -> None:
    rows = _shuffled_ramps(16, 2048, k)  # each row holds 0..2047 once: the k-th largest is 2048 - k
    assert np.array_equal(sampled_kth_largest(rows, k), np.full(16, 2048 - k, np.float32))


def test_sampled_bracket_ties_nan_and_constant_rows() -> None:
    rows = _shuffled_ramps(16, 2048, 0)
    rows[0] = 1.0  # all tied
    rows[1, 5] = np.nan
    rows[2] = np.where(rows[2] >= 1000, 5000.0, rows[2])  # 1048 entries tie at 5000 on top
    out = sampled_kth_largest(rows, 500)
    assert out[0] == 1.0 and np.isnan(out[1]) and out[2] == 5000.0 and out[3] == 1548.0


def test_wide_groups_take_the_bracket_only_on_slow_hosts(monkeypatch) -> None:
    v = _shuffled_ramps(16, 1024, 1)
    calls = []
    monkeypatch.setattr(selection, "sampled_kth_largest", lambda rows, k: calls.append(rows.shape) or
                        np.full(rows.shape[0], -1.0, rows.dtype))
    monkeypatch.setattr(selection, "SAMPLED_BRACKET", False)
    assert np.array_equal(kth_largest(v, 24, 1)[:, 0], np.full(16, 1000.0, np.float32)) and not calls
    monkeypatch.setattr(selection, "SAMPLED_BRACKET", True)
    assert kth_largest(v[:15], 24, 1)[:, 0].tolist() == [1000.0] * 15 and not calls  # 15 < MIN_SAMPLED_ROWS
    assert kth_largest(v[:, :1023], 24, 1).shape == (16, 1) and not calls  # 1023 < MIN_SAMPLED_WIDTH
    assert kth_largest(v, 24, 1).shape == (16, 1) and calls == [(16, 1024)]


ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n"


@pytest.mark.parametrize("text, features, slow", [
    (ZEN4, {"AVX512_SKX": True}, True),
    (ZEN4, {"AVX512_SKX": False}, False),
    (ZEN4, {}, False),  # no AVX-512 dispatch known
    (ZEN4.replace("AuthenticAMD", "HygonGenuine"), {"AVX512_SKX": True}, False),
    (ZEN4.replace(": 25", ": 26"), {"AVX512_SKX": True}, False),
    (ZEN4.replace(": 25", ": x"), {"AVX512_SKX": True}, False),
    ("\n\n" + ZEN4, {"AVX512_SKX": True}, True),  # leading blank lines are skipped
    ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\n" + ZEN4, {"AVX512_SKX": True}, False),
    ("vendor_id\t: AuthenticAMD\ncpu family\t: 25\ncpu family\t: 6\n", {"AVX512_SKX": True}, True),  # first wins
])
def test_partition_is_slow_by_hand(text: str, features: dict, slow: bool) -> None:
    assert partition_is_slow(text, features) is slow


def test_a_row_the_bracket_misses_by_one_falls_back() -> None:
    # n = 2048, k = 1024 (q = 1/2): s = 256, half = 2.5 * sqrt(256 / 4) + 1 = 21, ranks 128 -+ 21 = 107 and 149,
    # (149 - 107) * 2048 / 256 = 336 expected candidates <= 384: no doubling
    assert selection._bracket_ranks(2048, 1024) == (256, 107, 149)
    row = np.zeros(2048, np.float32)
    sampled = sample_columns(2048, 256)
    row[sampled] = 10000.0 + np.arange(256)  # sorted sample j = 10000 + j: low = 10107, high = 10149
    rest = np.setdiff1d(np.arange(2048), sampled)
    row[rest[:874]] = 20000.0  # above: 874 + 107 sampled = 981; candidates: 42 sampled → rank 43, one too many
    row[rest[874:]] = np.arange(918)
    # descending: 874 x 20000, then 10255 ... 10000; the 1024th largest is the 150th of the sample, 10106
    assert sampled_kth_largest(row[None], 1024).tolist() == [10106.0]
