"""Session 49's mutation review of the HTML report's noise table (:func:`kwta_robust.html_records.noise_section`):
each level's accuracy carries its Wilson interval (Wilson 1927, one draw; scipy's ``binomtest`` here) in %, the last
level's too, and the score its t interval (Student 1908, numpy), both on the 40 samples the probe ran on of the
record's 50 (mutants dropped every level's interval, the last one's, wrote the bounds as counts, or took the
record's n and so gave none)."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest, t

from eval_helpers import make_record
from kwta_robust.html_records import noise_section
from kwta_robust.numbers import percent_text
from test_noise_intervals import counts_for, numenta


def test_the_noise_table_gives_each_levels_wilson_interval_and_the_scores_t_interval_on_the_probes_samples() -> None:
    counts = counts_for(40, (1.0, 0.7, 0.3), seed=7)
    record = make_record(n=50)  # the probe ran on the first 40 of the 50 samples
    record.noise.append(numenta(counts))
    levels = []
    for row in counts:
        ci = binomtest(sum(row), 40).proportion_ci(confidence_level=0.95, method="wilson")
        levels.append(f"{percent_text(sum(row) / 40)} ({math.floor(1000 * ci.low) / 10:.1f}–"
                      f"{math.ceil(1000 * ci.high) / 10:.1f})")  # rounded outward (outward50)
    scores = np.asarray(counts, dtype=float).sum(axis=0)
    half = t.ppf(0.975, 39) * scores.std(ddof=1) / math.sqrt(40)
    score = f"{scores.sum():g} ({math.floor(40 * (scores.mean() - half))}–{math.ceil(40 * (scores.mean() + half))})"
    body = str(noise_section([record]).body)
    assert f'<td class="num">{score}</td>' in body
    assert f"<td>{', '.join(levels)}</td>" in body  # 100.0 (91.2–100.0), 70.0 (54.5–82.0), 35.0 (22.1–50.5)
