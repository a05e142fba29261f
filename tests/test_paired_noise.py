"""The paired noise row of the paired comparison (``compare``, ``table`` of several records): two hand-built records
with known per-sample counts give a known mean difference, paired t interval, higher / lower counts and sign test p;
a probe run with other settings gives no row but a note; every format the paired table renders shows the row."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest, t

from eval_helpers import make_record
from kwta_robust.formats import render_stdout, render_table
from kwta_robust.html_records import paired_section
from kwta_robust.narrow import narrow_markdown
from kwta_robust.noise_ci import paired_t_interval, t_quantile_975
from kwta_robust.paired import NOISE_LEGEND, noise_pairs, paired_table
from kwta_robust.report import cell_text
from kwta_robust.results import EvalRecord, NoiseResult

#: Two draws at levels 0 and 0.5 over 8 samples: in how many draws each sample was right, per level.
KWTA_COUNTS = [[2, 2, 2, 2, 2, 1, 0, 2], [2, 1, 2, 1, 0, 1, 0, 0]]  # per-sample scores 2, 1.5, 2, 1.5, 1, 1, 0, 1
RELU_COUNTS = [[2, 2, 2, 1, 2, 1, 0, 2], [1, 1, 0, 1, 0, 1, 0, 0]]  # 1.5, 1.5, 1, 1, 1, 1, 0, 1


def probe(counts: list[list[int]], value: float = 1.0, seed: int = 7, levels: tuple = (0.0, 0.5)) -> NoiseResult:
    """A numenta probe of two draws as the runner stores it (its noise score: the counts' total over the draws)."""
    result = {"kind": "numenta", "params": {"value": value}, "num_samples": 8, "correct_counts": counts,
              "noise_score": sum(map(sum, counts)) / 2}
    return NoiseResult("numenta", list(levels), 2, seed, result, 0.1)


def records(other: NoiseResult | None = None) -> list[EvalRecord]:
    kwta, relu = make_record(n=8, label="kwta"), make_record(n=8, label="relu")
    kwta.noise.append(probe(KWTA_COUNTS))
    relu.noise.append(probe(RELU_COUNTS) if other is None else other)
    return [kwta, relu]


def noise_rows(table) -> list[list[str]]:
    return [[cell_text(c) for c in row] for row in table.rows if cell_text(row[1]).startswith("noise ")]


def records32() -> list[EvalRecord]:
    """:func:`records` with each record's 8 samples four times over (32 samples: the paired t interval's 30 and more,
    :func:`kwta_robust.noise_ci.mean_interval`): mean difference 0.25 again, 12 samples higher under kwta."""
    kwta, relu = make_record(n=32, label="kwta"), make_record(n=32, label="relu")
    for rec, counts in ((kwta, KWTA_COUNTS), (relu, RELU_COUNTS)):
        rec.noise.append(probe([row * 4 for row in counts]))
    return [kwta, relu]


def test_the_noise_row_holds_the_scores_the_mean_difference_its_interval_and_the_sign_test() -> None:
    [c], notes = noise_pairs(*records())
    assert notes == []
    assert (c.reference_score, c.other_score, c.n) == (10.0, 8.0, 8)
    assert c.differences == (0.5, 0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0)
    assert c.difference == pytest.approx(0.25)
    assert (c.higher, c.lower) == (3, 0)
    assert c.p_value == pytest.approx(binomtest(0, 3, 0.5).pvalue) == pytest.approx(0.25)
    half = t.ppf(0.975, 7) * math.sqrt(1 / 7) / math.sqrt(8)  # sd of the differences: sqrt(1.0 / 7)
    assert paired_t_interval(c.differences) == pytest.approx((0.25 - half, 0.25 + half), abs=1e-6)
    assert all(math.isnan(v) for v in c.interval)  # 8 samples: no t interval below 30 (noise_ci.mean_interval)
    table = paired_table(records())
    assert noise_rows(table) == [["kwta − relu", "noise numenta 10 vs 8", "8", "+0.25/sample", "—", "3",
                                  "0", "sign 0.25"]]
    assert NOISE_LEGEND in table.notes
    assert [cell_text(row[1]) for row in table.rows] == ["clean", "noise numenta 10 vs 8"]  # after the accuracies
    [c32], _ = noise_pairs(*records32())
    half = t.ppf(0.975, 31) * math.sqrt(4 / 31) / math.sqrt(32)  # the same differences four times: sd sqrt(4 / 31)
    assert c32.interval == pytest.approx((0.25 - half, 0.25 + half), abs=1e-6)
    assert noise_rows(paired_table(records32()))[0][1:] == ["noise numenta 40 vs 32", "32", "+0.25/sample",
                                                            "0.12 to 0.38", "12", "0", "sign 0.00049"]


def test_swapping_the_models_mirrors_the_row_and_a_probe_one_record_lacks_has_none() -> None:
    kwta, relu = records()
    [c], _ = noise_pairs(relu, kwta)
    assert (c.difference, c.higher, c.lower) == (pytest.approx(-0.25), 0, 3)
    assert noise_rows(paired_table([relu, kwta]))[0][1:5] == ["noise numenta 8 vs 10", "8", "-0.25/sample", "—"]
    assert paired_t_interval(c.differences) == pytest.approx(tuple(-v for v in reversed(
        paired_t_interval(noise_pairs(kwta, relu)[0][0].differences))))
    kwta32, relu32 = records32()
    assert noise_rows(paired_table([relu32, kwta32]))[0][4] == "-0.38 to -0.12"
    relu.noise.clear()  # a probe only one record ran: no row, no note
    table = paired_table([kwta, relu])
    assert noise_rows(table) == [] and not [n for n in table.notes if n.startswith("noise")]


@pytest.mark.parametrize("other, note", [
    (probe(RELU_COUNTS, value=0.7469), "value 1 in kwta, 0.7469 in relu"),
    (probe(RELU_COUNTS, seed=8), "seed 7 in kwta, 8 in relu"),
    (probe([[1] * 8, [1] * 8, [1] * 8], levels=(0.0, 0.25, 0.5)), "levels [0, 0.5] in kwta, [0, 0.25, 0.5] in relu"),
])
def test_a_probe_run_with_other_settings_gets_no_row_but_a_note(other: NoiseResult, note: str) -> None:
    table = paired_table(records(other))
    assert noise_rows(table) == []
    assert NOISE_LEGEND not in table.notes
    assert [n for n in table.notes if n.startswith("noise")] == [
        f"noise numenta: no paired row, its settings differ between the records ({note}): the models saw other noisy "
        "inputs, so their scores are not paired"]



def test_every_format_of_the_paired_table_shows_the_row_and_its_legend() -> None:
    recs = records32()
    row = "noise numenta 40 vs 32"
    for text in (render_table(paired_table(recs), "md"), narrow_markdown(recs), render_stdout(recs, "wide"),
                 render_stdout(recs, "latex"), str(paired_section(recs).body)):
        assert row in text and "+0.25" in text and "0.12 to 0.38" in text
        assert "noise rows: the accuracy column names the noise probe (noise numenta;" in " ".join(text.split())


@pytest.mark.parametrize("df", [1, 2, 3, 6, 7, 10, 30, 199, 5000])
def test_the_t_quantile_matches_scipy(df: int) -> None:
    assert t_quantile_975(df) == pytest.approx(t.ppf(0.975, df), abs=5e-6)


def test_the_paired_t_interval_needs_two_differences_and_is_a_point_without_spread() -> None:
    assert all(math.isnan(v) for v in paired_t_interval([1.0]))
    assert paired_t_interval([0.5] * 4) == (0.5, 0.5)


def test_the_printed_mean_difference_rounds_halves_away_from_zero() -> None:
    """1/8 of a correct answer per sample is ``+0.13`` (Python's format writes ``+0.12``), as every printed number."""
    kwta, relu = make_record(n=8, label="kwta"), make_record(n=8, label="relu")
    kwta.noise.append(probe([[2] + [0] * 7], levels=(0.0,)))  # two draws: sample 0 scores 1, the others 0
    relu.noise.append(probe([[0] * 8], levels=(0.0,)))
    [c], _ = noise_pairs(kwta, relu)
    assert c.difference == 0.125 and f"{c.difference:+.2f}" == "+0.12"
    assert noise_rows(paired_table([kwta, relu]))[0][3] == "+0.13/sample"
    assert noise_rows(paired_table([relu, kwta]))[0][3] == "-0.13/sample"
