"""Session 49's mutation review of :mod:`kwta_robust.noise_matrix`: a score cell's interval is taken on the samples
the probe ran on (``num_samples``, 40), not the record's (50: its counts are ``[levels][40]``, so a mutant taking
the record's n gave no interval); it is ``n ×`` the t interval of the mean per-image score (Student 1908), computed
here with numpy and scipy's t quantile, and per image and level ``/ (levels × n)``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t

from eval_helpers import make_record
from kwta_robust.noise_matrix import NoiseScore, noise_metrics, noise_value, percent_cell, score_cell
from test_noise_intervals import counts_for, numenta


def test_a_score_cell_of_a_probe_on_40_of_the_records_50_samples_has_the_t_interval_on_40() -> None:
    counts = counts_for(40, (1.0, 0.7, 0.3), seed=21)
    record = make_record(n=50)
    record.noise.append(numenta(counts))
    scores = np.asarray(counts, dtype=float).sum(axis=0)
    half = t.ppf(0.975, 39) * scores.std(ddof=1) / math.sqrt(40)
    expected = (40 * (scores.mean() - half), 40 * (scores.mean() + half))
    value = noise_value(record, noise_metrics([record])["noise numenta"])
    assert isinstance(value, NoiseScore) and (value.n, value.score) == (40, scores.sum())
    assert (value.score_low, value.score_high) == pytest.approx(expected, abs=1e-6)
    assert score_cell(value).ci == pytest.approx(expected, abs=1e-6)
    assert percent_cell(value).ci == pytest.approx((expected[0] / 120, expected[1] / 120), abs=1e-9)
