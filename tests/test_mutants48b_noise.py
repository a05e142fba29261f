"""Session 48's second mutation review: the noise intervals' surviving mutants (kwta_robust.noise_ci,
noise_matrix, noise_notes), each killed by a small seeded case: the samples a probe ran on when they differ from the
record's, the 30-sample rule at exactly 30, the clipping of the score's and the levels' t intervals to their range,
a probe without draws, and the per-level t interval with two draws."""

from __future__ import annotations

import math

import pytest

from eval_helpers import make_record
from kwta_robust.noise_ci import (interval_text, level_intervals, paired_t_interval, record_score_interval,
                                  score_bounds_text, score_interval)
from kwta_robust.noise_matrix import NoiseLevel, noise_metrics, noise_value
from kwta_robust.report import detail_table, noise_score_notes, other_noise_notes
from kwta_robust.results import NoiseResult, wilson_interval
from test_noise_intervals import LEVELS, counts_for, numenta, t_reference


def _probe(counts: list[list[int]], draws: int = 1) -> NoiseResult:
    return numenta(counts, draws)


def test_the_interval_uses_the_samples_the_probe_ran_on_not_the_records() -> None:
    counts = counts_for(40, (1.0, 0.7, 0.3), seed=3)
    record = make_record(n=50)  # the noise probe ran on the first 40 of the 50 samples
    record.noise.append(_probe(counts))
    assert record_score_interval(record) == pytest.approx(t_reference(counts, 1), abs=1e-6)
    whole = make_record(n=40)  # num_samples true (a bool, no sample count): the record's n, 40, not 1
    whole.noise.append(_probe(counts))
    whole.noise[0].result["num_samples"] = True
    assert record_score_interval(whole) == pytest.approx(t_reference(counts, 1), abs=1e-6)


def test_thirty_samples_get_an_interval_twenty_nine_none() -> None:
    for n, given in ((30, True), (29, False)):
        probe = _probe(counts_for(n, (1.0, 0.6, 0.4), seed=n))
        assert (score_interval(probe, n) is not None) is given
        several = _probe(counts_for(n, (1.0, 0.6, 0.4), draws=3, seed=n), draws=3)
        # level 0 (the clean input, a proportion): Wilson at any n; the noisy levels: t from 30 (noise_ci.mean_interval)
        assert [b is not None for b in level_intervals(several, n)] == [True, given, given]


def test_two_draws_below_thirty_samples_give_no_level_interval_and_from_thirty_the_t_one() -> None:
    below = level_intervals(_probe(counts_for(20, (1.0, 0.5, 0.2), draws=2, seed=1), draws=2), 20)
    assert below == [wilson_interval(20, 20), None, None]  # level 0, the clean input: Wilson at any n
    counts = counts_for(40, (1.0, 0.5, 0.2), draws=2, seed=1)
    bounds = level_intervals(_probe(counts, draws=2), 40)
    expected = [paired_t_interval([c / 2 for c in row]) for row in counts]
    assert bounds[1:] == expected[1:]  # t over the per-sample fractions, not Wilson


def test_the_score_interval_is_clipped_to_zero_and_to_levels_times_n() -> None:
    n = 30
    low_counts = [[1 if i == 0 else 0 for i in range(n)] for _ in LEVELS]  # one image right: mean 0.1, t low < 0
    assert paired_t_interval([sum(c) for c in zip(*low_counts)])[0] < 0
    low, high = score_interval(_probe(low_counts), n)
    assert low == 0.0 and high > 3
    high_counts = [[0 if i == 0 else 1 for i in range(n)] for _ in LEVELS]  # one image wrong: t high > 3 per image
    assert paired_t_interval([sum(c) for c in zip(*high_counts)])[1] > len(LEVELS)
    low, high = score_interval(_probe(high_counts), n)
    assert high == len(LEVELS) * n and low < len(LEVELS) * n - 3


def test_the_level_t_interval_is_clipped_to_zero_and_one() -> None:
    n = 30
    counts = [[2] * (n - 1) + [1], [1] + [0] * (n - 1), [1] * n]  # nearly all right, nearly all wrong, all half
    (low0, high0), (low1, high1), (low2, high2) = level_intervals(_probe(counts, draws=2), n)
    assert high0 == 1.0 and 0.9 < low0 < 1.0
    assert low1 == 0.0 and 0.0 < high1 < 0.1
    assert low2 == high2 == 0.5  # every image alike: no width


def test_a_probe_without_draws_has_no_interval() -> None:
    probe = _probe(counts_for(40, (1.0, 0.7, 0.3), seed=2))
    probe = NoiseResult(probe.kind, probe.levels, 0, probe.seed, probe.result, probe.wall_time_s)
    assert score_interval(probe, 40) is None and level_intervals(probe, 40) is None
    assert math.isnan(paired_t_interval([1.0])[0])


def test_the_score_columns_interval_is_the_numenta_probes_after_another_kind() -> None:
    record = make_record(n=40)
    record.noise.append(numenta(counts_for(40, (1.0, 0.2, 0.1), seed=4), kind="gaussian"))
    counts = counts_for(40, (1.0, 0.7, 0.3), seed=5)
    record.noise.append(_probe(counts))
    assert record_score_interval(record) == pytest.approx(t_reference(counts, 1), abs=1e-6)


def test_score_bounds_round_outward_whatever_the_fraction() -> None:
    assert score_bounds_text(1467.3, 1610.2) == ("1467", "1611")  # ceil, not round: 1610.2 is 1611
    assert score_bounds_text(1467.7, 1610.7) == ("1467", "1611")  # floor, not round: 1467.7 is 1467
    assert interval_text(1467.3, 1610.2) == "1467–1611"


def _level_values(record) -> dict:
    return {name: noise_value(record, metric) for name, metric in noise_metrics([record], levels=True).items()}


def test_a_per_level_matrix_of_the_first_level_reads_that_level_where_it_is_not_zero() -> None:
    record = make_record(n=30)
    record.noise.append(_probe(counts_for(30, (0.9, 0.7, 0.3), seed=6)))
    record.noise[0].levels = [0.1, 0.25, 0.5]  # no clean level: index 0 has a matrix of its own
    values = _level_values(record)
    first = values["noise numenta level 0.1"]
    assert isinstance(first, NoiseLevel) and first.accuracy == record.noise[0].result["accuracy"][0]


def test_a_level_without_an_accuracy_number_is_no_cell() -> None:
    record = make_record(n=30)
    record.noise.append(_probe(counts_for(30, (1.0, 0.7, 0.3), seed=7)))
    record.noise[0].result["accuracy"] = [1.0, None]  # an old or hand-edited record: level 0.25 none, 0.5 missing
    values = _level_values(record)
    assert values["noise numenta level 0.25"] is None and values["noise numenta level 0.5"] is None


def test_a_levels_correct_count_is_the_count_averaged_over_the_draws_not_the_float_product() -> None:
    one = make_record(n=49)  # 1/49 × 49 is 0.9999999999999999 in floats
    one.noise.append(_probe([[1] * 49, [1] + [0] * 48, [0] * 49]))
    assert _level_values(one)["noise numenta level 0.25"].correct == 1
    three = make_record(n=30)  # 3 draws, one right draw in all: 1/3 of a classification on average
    three.noise.append(_probe([[3] * 30, [1] + [0] * 29, [0] * 30], draws=3))
    assert _level_values(three)["noise numenta level 0.25"].correct == 1 / 3


def test_the_notes_give_intervals_on_the_samples_the_probes_ran_on() -> None:
    record = make_record(n=50, label="sub")  # the probes ran on 40 of the 50 samples
    counts = counts_for(40, (1.0, 0.7, 0.3), seed=8)
    record.noise += [_probe(counts), numenta(counts, kind="gaussian")]
    low, high = t_reference(counts, 1)
    detail = [n for n in detail_table(record).notes if n.startswith("noise ")]
    assert len(detail) == 2 and all("accuracy % per level (95% interval: Wilson)" in n for n in detail)
    assert f"(95% interval {math.floor(low)}–{math.ceil(high)})" in detail[0]
    assert "(95% interval: Wilson)" in other_noise_notes([record])[0]
    note, = [n for n in noise_score_notes([record]) if n.startswith("noise score:")]
    assert f"({math.floor(1000 * low / 120) / 10:.1f}–{math.ceil(1000 * high / 120) / 10:.1f})" in note  # outward


def test_the_per_image_note_is_the_first_numenta_probes_and_a_probe_without_levels_is_a_dash() -> None:
    record = make_record(n=40, label="two")
    record.noise += [_probe(counts_for(40, (1.0, 0.9, 0.8), seed=9)), _probe(counts_for(40, (1.0, 0.1, 0.0), seed=9))]
    first = record.noise[0].result["noise_score_normalized"]
    note, = [n for n in noise_score_notes([record]) if n.startswith("noise score:")]
    assert f"per image and level: {100 * first:.1f}% (" in note
    low, high = t_reference(record.noise[1].result["correct_counts"], 1)
    others, = [n for n in noise_score_notes([record]) if n.startswith("[two]")]
    assert others.endswith(f"(95% interval {math.floor(low)}–{math.ceil(high)})")
    empty = make_record(n=40, label="empty")
    empty.noise.append(NoiseResult("numenta", [], 1, 0, {"noise_score": 0.0, "num_samples": 40}, 0.1))
    note, = [n for n in noise_score_notes([empty]) if n.startswith("noise score:")]
    assert "per image and level: —;" in note


def test_the_per_image_note_names_each_record_where_there_are_two() -> None:
    records = [make_record(n=40, label="kwta"), make_record(n=40, label="relu")]
    for seed, record in enumerate(records):
        record.noise.append(_probe(counts_for(40, (1.0, 0.7, 0.3), seed=seed)))
    note, = [n for n in noise_score_notes(records) if n.startswith("noise score:")]
    values = [100 * r.noise[0].result["noise_score_normalized"] for r in records]
    assert f"per image and level: kwta {values[0]:.1f}% (" in note and f", relu {values[1]:.1f}% (" in note
