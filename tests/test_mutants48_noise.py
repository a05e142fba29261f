"""Mutation review of session 47's noise code (kwta_robust.noise_matrix, kwta_robust.paired's noise pairing and t
quantile): each test kills a mutant the existing tests let live, on hand-built records with known counts."""

from __future__ import annotations

import math

from eval_helpers import make_record
from test_matrix_noise import noisy_records
from test_paired_noise import KWTA_COUNTS, RELU_COUNTS, noise_rows, probe
from kwta_robust.matrix import build_matrices, long_table
from kwta_robust.noise_matrix import NoiseScore, noise_metrics, noise_value
from kwta_robust.noise_ci import sample_scores, t_quantile_975
from kwta_robust.paired import NOISE_LEGEND, noise_pairs, paired_table
from kwta_robust.report import cell_text
from kwta_robust.results import NoiseResult


def test_no_t_quantile_without_a_degree_of_freedom() -> None:
    """``df`` 0 is ``nan``, not the table's last entry (``_T975[-1]``)."""
    assert math.isnan(t_quantile_975(0)) and math.isnan(t_quantile_975(-1))


def test_counts_of_another_shape_give_no_sample_scores() -> None:
    """A level missing from ``correct_counts`` or a row of another length than ``n`` is no per-sample score."""
    assert sample_scores(probe(KWTA_COUNTS), 8) == [2.0, 1.5, 2.0, 1.5, 1.0, 1.0, 0.0, 1.0]
    assert sample_scores(probe(KWTA_COUNTS[:1]), 8) is None  # one row for two levels
    assert sample_scores(probe([KWTA_COUNTS[0], KWTA_COUNTS[1][:7]]), 8) is None  # a row of 7 samples


def test_the_note_names_the_record_lacking_the_counts() -> None:
    bare = probe(RELU_COUNTS)
    del bare.result["correct_counts"]
    for first, second, lacking in (("kwta", "relu", "relu"), ("relu", "kwta", "relu")):
        a, b = make_record(n=8, label=first), make_record(n=8, label=second)
        a.noise.append(probe(KWTA_COUNTS) if first == "kwta" else bare)
        b.noise.append(probe(KWTA_COUNTS) if second == "kwta" else bare)
        assert noise_pairs(a, b) == ([], [f"noise numenta: no paired row, {lacking} holds no per-sample counts of it "
                                          "(correct_counts [levels][n]): evaluate it again with this version"])


def _pairs(mine: list[NoiseResult], theirs: list[NoiseResult]) -> tuple[list, list[str]]:
    kwta, relu = make_record(n=8, label="kwta"), make_record(n=8, label="relu")
    kwta.noise.extend(mine)
    relu.noise.extend(theirs)
    return noise_pairs(kwta, relu)


def _differ(i: int, seeds: str) -> str:
    return (f"noise numenta [{i + 1}]: no paired row, its settings differ between the records (seed {seeds}): the "
            "models saw other noisy inputs, so their scores are not paired")


def test_each_probe_of_the_other_record_pairs_with_one_probe_at_most() -> None:
    """Two probes of one kind: the row is named by its ordinal among them (``noise numenta [1]``); the reference's
    probe left over is told apart from the other's probe not yet paired (not the one already paired, nor one another
    note named)."""
    rows, notes = _pairs([probe(KWTA_COUNTS), probe(KWTA_COUNTS, seed=8)],
                         [probe(RELU_COUNTS), probe(RELU_COUNTS, seed=9)])
    assert [(c.name, c.reference_score, c.other_score) for c in rows] == [("noise numenta [1]", 10.0, 8.0)]
    assert notes == [_differ(1, "8 in kwta, 9 in relu")]
    rows, notes = _pairs([probe(KWTA_COUNTS), probe(KWTA_COUNTS)], [probe(RELU_COUNTS), probe(RELU_COUNTS, seed=8)])
    assert [c.name for c in rows] == ["noise numenta [1]"] and notes == [_differ(1, "7 in kwta, 8 in relu")]
    rows, notes = _pairs([probe(KWTA_COUNTS, seed=1), probe(KWTA_COUNTS, seed=2)],
                         [probe(RELU_COUNTS, seed=3), probe(RELU_COUNTS, seed=4)])
    assert rows == [] and notes == [_differ(0, "1 in kwta, 3 in relu"), _differ(1, "2 in kwta, 4 in relu")]


def test_a_score_without_levels_has_no_accuracy() -> None:
    assert math.isnan(NoiseScore(5.0, 10, 0, 1).accuracy) and NoiseScore(6.0, 4, 3, 1).accuracy == 0.5


def test_a_cell_takes_the_probe_of_its_metric_kind_and_its_own_sample_count() -> None:
    """Two kinds with the same settings are two metrics, each cell its own kind's score; ``num_samples`` (not the
    clean accuracy's ``n``) is the cell's ``n``; a count that is a bool is no count: the record's ``n`` stands in, as
    :func:`~kwta_robust.noise_ci.probe_samples` gives it to the notes (small49: the cell was ``None``)."""
    record = make_record(n=10)
    record.noise += [NoiseResult(kind, [0.0, 0.5], 1, 0, {"noise_score": score, "num_samples": 5}, 0.1)
                     for kind, score in (("numenta", 7.0), ("gaussian", 4.0))]
    metrics = noise_metrics([record])
    assert list(metrics) == ["noise numenta", "noise gaussian"]
    assert [(v.score, v.n) for v in (noise_value(record, m) for m in metrics.values())] == [(7.0, 5), (4.0, 5)]
    record.noise[0].result["num_samples"] = True
    assert noise_value(record, metrics["noise numenta"]).n == 10


def test_one_settings_per_kind_has_no_apart_note_and_the_long_table_shows_percent() -> None:
    matrices = build_matrices(noisy_records())
    [noise] = [m for m in matrices if m.metric == "noise numenta"]
    assert "never mixed" not in " ".join(noise.notes)
    rows = [[cell_text(c) for c in row] for row in long_table(matrices).rows if cell_text(row[0]) == "noise numenta"]
    assert [row[11:13] for row in rows] == [["21", "70.0"], ["18", "60.0"], ["27", "90.0"], ["24.5", "81.7"]]


def test_a_positive_interval_has_no_plus_and_a_record_without_the_probe_keeps_the_legend() -> None:
    """Per-sample differences 2, 1.5, 2, 1.5, 1, 1, 0, 1 four times over (32 samples: a t interval from 30; mean
    1.25, sd sqrt(12/31)): ``1.03 to 1.47``, as the interval around 0 writes ``-0.07 to 0.57``; a third record without
    the probe keeps the noise rows' legend."""
    kwta, relu = make_record(n=32, label="kwta"), make_record(n=32, label="relu")
    kwta.noise.append(probe([row * 4 for row in KWTA_COUNTS]))
    relu.noise.append(probe([[0] * 32, [0] * 32]))
    third = make_record(n=32, label="third")
    table = paired_table([kwta, relu, third])
    assert noise_rows(table) == [["kwta − relu", "noise numenta 40 vs 0", "32", "+1.25/sample", "1.02 to 1.48", "28",
                                  "0", "sign < 1e-6"]]
    assert NOISE_LEGEND in table.notes
