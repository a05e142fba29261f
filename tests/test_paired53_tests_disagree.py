"""A paired row whose 95% interval (Newcombe 1998) and McNemar's exact test disagree at the 5% level gets a note.

A persona walk (a sparsity-matrix author, 20 samples): kWTA − ReLU −25 points with an interval of −42.7 to −3.3,
excluding 0, beside McNemar's exact p = 0.06 (5 vs 0 samples right under one model alone). A reader of the interval
alone calls the gap significant; the table now says the two methods part at so few such samples and which is the
conservative reading. Rows where they agree get no note, so the quickstart's table is unchanged."""

from __future__ import annotations

from eval_helpers import make_record, make_result
from kwta_robust.formats import render_table
from kwta_robust.paired import paired_comparisons, paired_table, tests_disagree as disagree_note


def _pair(only_first: int, only_second: int, both: int, neither: int) -> tuple:
    first = [1] * only_first + [0] * only_second + [1] * both + [0] * neither
    second = [0] * only_first + [1] * only_second + [1] * both + [0] * neither
    return (make_record([make_result("pgd", first)], label="kwta"),
            make_record([make_result("pgd", second)], label="relu"))


def test_an_interval_excluding_zero_beside_an_exact_p_above_five_percent_is_noted() -> None:
    kwta, relu = _pair(0, 5, 3, 12)  # 20 samples: relu alone keeps 5, kwta alone none
    worst = paired_comparisons([kwta, relu])[1]
    assert worst.interval[1] < 0 and worst.p_value > 0.05  # the interval excludes 0; McNemar's p = 2 / 2**5 = 0.0625
    text = render_table(paired_table([kwta, relu]), "wide")
    assert "kwta − relu, worst case Linf 0.3: the 95% interval excludes 0 while McNemar's exact p is 0.06" in text
    assert "(0 vs 5 samples right under one model alone)" in text and "conservative reading" in text


def test_rows_whose_interval_and_test_agree_get_no_note() -> None:
    kwta, relu = _pair(0, 20, 5, 5)  # a clear gap: both say significant
    assert "disagree" not in render_table(paired_table([kwta, relu]), "wide")
    kwta, relu = _pair(1, 1, 10, 8)  # no gap: both say not significant
    assert "disagree" not in render_table(paired_table([kwta, relu]), "wide")


def test_the_note_reads_both_directions_and_skips_values_that_are_not_finite() -> None:
    assert "excludes 0" in disagree_note("a − b", "clean", (-0.4, -0.03), 0.06, 0, 5)[0]
    assert "includes 0" in disagree_note("a − b", "clean", (-0.4, 0.01), 0.04, 0, 6)[0]
    assert disagree_note("a − b", "clean", (-0.4, -0.03), 0.01, 0, 9) == []
    assert disagree_note("a − b", "clean", (float("nan"), 0.1), 0.5, 0, 0) == []
