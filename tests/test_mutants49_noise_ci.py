"""Session 49's mutation review of :mod:`kwta_robust.noise_ci`: the mutants earlier tests let live (a per-level matrix
cell's interval at exactly 30 samples with several draws; the "noise score" column's interval taken from its own
probe, the first ``numenta`` one with a score) and the statistics checked against a direct computation: Student's t
quantile (scipy), the one-sample t interval of a mean (scipy's ``t.interval``), the noise score's interval ``n ×``
it over the per-image scores, clipped to ``[0, levels × n]`` (numpy), and each level's Wilson interval (Wilson 1927,
scipy's ``binomtest``) on hand cases. Counts ``[levels][n]``, seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, t

from eval_helpers import make_record
from kwta_robust.noise_ci import (level_interval, level_intervals, paired_t_interval, record_score_interval,
                                  score_interval, t_quantile_975)
from kwta_robust.noise_matrix import NoiseLevel, noise_metrics, noise_value
from kwta_robust.report import compare_table
from test_noise_intervals import counts_for, numenta


def _numpy_score_interval(counts: list[list[int]], draws: int) -> tuple[float, float]:
    """``n × (mean ± t_{0.975, n-1} · sd / sqrt(n))`` of the per-image scores, clipped to ``[0, levels × n]``."""
    scores = np.asarray(counts, dtype=float).sum(axis=0) / draws
    n = scores.size
    half = t.ppf(0.975, n - 1) * scores.std(ddof=1) / math.sqrt(n)
    return (max(0.0, n * (scores.mean() - half)), min(len(counts) * n, n * (scores.mean() + half)))


def test_t_quantile_is_students_at_every_df_to_300_and_far_beyond() -> None:
    for df in [*range(1, 301), 1000, 10 ** 5]:
        assert t_quantile_975(df) == pytest.approx(t.ppf(0.975, df), abs=5e-6), df
    assert math.isnan(t_quantile_975(0))


@pytest.mark.parametrize("values", [[0.0, 1.0], [3.0, 1.0, 2.0, 2.5], [0.2] * 9 + [1.7], list(range(40))])
def test_the_t_interval_of_a_mean_is_scipys(values: list[float]) -> None:
    arr = np.asarray(values, dtype=float)
    expected = t.interval(0.95, arr.size - 1, loc=arr.mean(), scale=arr.std(ddof=1) / math.sqrt(arr.size))
    assert paired_t_interval(values) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("n, draws, rates, seed", [(30, 1, (1.0, 0.7, 0.3), 11), (45, 3, (0.95, 0.5, 0.1), 12),
                                                   (30, 1, (0.05, 0.0, 0.0), 13), (31, 2, (1.0, 1.0, 0.97), 14)])
def test_the_score_interval_is_n_times_the_t_interval_clipped_as_numpy_computes_it(
        n: int, draws: int, rates: tuple[float, ...], seed: int) -> None:
    counts = counts_for(n, rates, draws, seed)
    assert score_interval(numenta(counts, draws), n) == pytest.approx(_numpy_score_interval(counts, draws), abs=1e-6)


def test_a_hand_counted_score_interval() -> None:
    """30 images, 3 levels, one draw: 10 images score 3, 10 score 2, 10 score 1: mean 2, sd sqrt(20/29)."""
    counts = [[1] * 30, [1] * 20 + [0] * 10, [1] * 10 + [0] * 20]
    half = 2.045229642132703 * math.sqrt(20 / 29) / math.sqrt(30)  # t_{0.975, 29}
    assert score_interval(numenta(counts), 30) == pytest.approx((30 * (2 - half), 30 * (2 + half)), abs=1e-5)


@pytest.mark.parametrize("n", [10, 30, 57])
def test_a_levels_interval_with_one_draw_is_wilsons_at_any_n(n: int) -> None:
    counts = counts_for(n, (1.0, 0.6, 0.15), seed=n)
    probe = numenta(counts)
    for i, row in enumerate(counts):
        ci = binomtest(sum(row), n).proportion_ci(confidence_level=0.95, method="wilson")
        expected = (ci.low, ci.high)
        assert level_intervals(probe, n)[i] == pytest.approx(expected, abs=1e-9)
        assert level_interval(probe, n, i) == pytest.approx(expected, abs=1e-9)


def test_a_per_level_matrix_cell_at_thirty_samples_and_two_draws_has_its_t_interval() -> None:
    counts = counts_for(30, (1.0, 0.6, 0.2), draws=2, seed=15)
    probe = numenta(counts, draws=2)
    fractions = np.asarray(counts[1], dtype=float) / 2
    half = t.ppf(0.975, 29) * fractions.std(ddof=1) / math.sqrt(30)
    expected = (fractions.mean() - half, fractions.mean() + half)
    assert level_interval(probe, 30, 1) == pytest.approx(expected, abs=1e-6)
    record = make_record(n=30)
    record.noise.append(probe)
    metrics = noise_metrics([record], levels=True)
    cell = noise_value(record, metrics["noise numenta level 0.25"])
    assert isinstance(cell, NoiseLevel) and (cell.ci_low, cell.ci_high) == pytest.approx(expected, abs=1e-6)


def test_the_noise_score_columns_interval_is_the_first_scored_numenta_probes() -> None:
    """A numenta probe without a score (its run failed) is skipped as the column skips it; of two scored ones the
    first is the column's, and its interval with it."""
    unscored, first, second = (counts_for(40, rates, seed=s) for s, rates in
                               ((16, (1.0, 0.1, 0.0)), (17, (1.0, 0.7, 0.3)), (18, (1.0, 0.9, 0.8))))
    record = make_record(n=40)
    record.noise += [numenta(unscored), numenta(first), numenta(second)]
    record.noise[0].result["noise_score"] = None
    expected = _numpy_score_interval(first, 1)
    assert record_score_interval(record) == pytest.approx(expected, abs=1e-6)
    table = compare_table([record])
    cell = table.rows[0][table.headers.index("noise score")]
    assert cell.value == sum(map(sum, first)) and cell.ci == pytest.approx(expected, abs=1e-6)
