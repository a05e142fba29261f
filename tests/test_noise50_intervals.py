"""Session 50's noise reporting, intervals (kwta_robust.noise_ci, kwta_robust.paired): one rule for every t interval
of noise results (the score's, a level's with several draws, the paired rows' mean difference: from 30 images, as the
legends say; the paired rows had one at any n), and the Wilson interval for level 0 (the clean input, a proportion
whatever the draws) in every place that shows it, as the clean column does (it had the t interval of the draws)."""

from __future__ import annotations

import math
import random

from eval_helpers import make_record
from kwta_robust.html_noise import noise_section
from kwta_robust.noise_ci import INTERVAL_LEGEND, MIN_T_SAMPLES, level_intervals
from kwta_robust.noise_notes import other_noise_notes, probe_notes
from kwta_robust.paired import NOISE_LEGEND, noise_pairs, paired_table
from kwta_robust.report import cell_text, compare_table
from kwta_robust.results import EvalRecord, NoiseResult, wilson_interval

LEVELS = [0.0, 0.25, 0.5]


def _probe(counts: list[list[int]], draws: int, kind: str = "numenta") -> NoiseResult:
    n = len(counts[0])
    score = sum(map(sum, counts)) / draws
    result = {"kind": kind, "params": {"value": 1.0}, "num_samples": n, "correct_counts": counts,
              "accuracy": [sum(row) / (draws * n) for row in counts], "noise_score": score}
    return NoiseResult(kind, list(LEVELS), draws, 0, result, 0.1)


def _record(n: int, seed: int, label: str, draws: int = 3, kind: str = "numenta") -> EvalRecord:
    """A record whose probe ran as :mod:`attacks.noise` runs one: level 0 judged once, so each image is right in all
    ``draws`` or in none, as its clean flag says; the noisy levels seeded."""
    rng = random.Random(seed)
    clean = [int(rng.random() < 0.85) for _ in range(n)]
    noisy = [[sum(rng.random() < rate for _ in range(draws)) for _ in range(n)] for rate in (0.6, 0.3)]
    record = make_record(n=n, label=label, clean_flags=clean)
    record.noise.append(_probe([[draws * c for c in clean], *noisy], draws, kind))
    return record


def _noise_row(table) -> list[str]:
    row, = [[cell_text(c) for c in r] for r in table.rows if cell_text(r[3]).endswith("/sample")]
    return row


def test_the_paired_rows_t_interval_follows_the_scores_rule_of_thirty_images() -> None:
    """29 images: neither the noise score column nor the paired row has a t interval (the row had one); 30: both."""
    for n in (MIN_T_SAMPLES - 1, MIN_T_SAMPLES):
        records = [_record(n, 1, "kwta"), _record(n, 2, "relu")]
        score = compare_table(records).rows[0][compare_table(records).headers.index("noise score")]
        [pair], _ = noise_pairs(*records)
        row = _noise_row(paired_table(records))
        shown = n >= MIN_T_SAMPLES
        assert (score.ci is not None) is shown
        assert (not math.isnan(pair.interval[0])) is shown
        assert (row[4] == "—") is not shown and (" to " in row[4]) is shown
        assert row[7].startswith("sign ")  # the exact sign test at any n


def test_the_legends_state_the_one_rule() -> None:
    assert f"paired t 95% interval (given from n ≥ {MIN_T_SAMPLES} images, as every t interval of the noise results; " \
           "else —)" in NOISE_LEGEND
    assert f"n ≥ {MIN_T_SAMPLES}; else the score is shown alone" in INTERVAL_LEGEND
    assert NOISE_LEGEND in paired_table([_record(10, 1, "kwta"), _record(10, 2, "relu")]).notes


def test_level_zero_is_a_proportion_with_the_clean_columns_wilson_interval_at_any_n() -> None:
    """Three draws: level 0 had the t interval of the draws from 30 images (none below), the clean column Wilson."""
    for n in (12, 40):
        record = _record(n, 3, "kwta", kind="gaussian")
        clean = cell_text(compare_table([record]).rows[0][compare_table([record]).headers.index("clean")])
        bounds = level_intervals(record.noise[0], n)
        assert bounds[0] == wilson_interval(record.clean.correct, n) == (record.clean.ci_low, record.clean.ci_high)
        assert (bounds[1] is not None) is (n >= MIN_T_SAMPLES)  # the noisy levels keep the t rule
        rest = "t over the images" if n >= MIN_T_SAMPLES else "none below 30 images"  # session 51: what is shown
        level_zero = f"accuracy % per level (95% interval: Wilson at level 0, else {rest}) {clean}"
        assert level_zero in other_noise_notes([record])[0] and level_zero in probe_notes(record)[0]
        assert clean in str(noise_section([record]).body)

