"""Mutation review (mut51) of :mod:`kwta_robust.paired_columns`: two records on other samples are no pair, so the
table comes back as it was (no paired columns and no note saying what they hold)."""

from __future__ import annotations

from eval_helpers import make_record, make_result
from kwta_robust.paired_columns import PAIRED_COLUMNS_NOTE, with_paired_columns
from kwta_robust.report import compare_table


def test_records_on_other_samples_leave_the_table_as_it_was() -> None:
    first = make_record([make_result("pgd", [1, 0, 1, 1], eps=0.1)], label="kwta", clean_flags=[1, 1, 1, 1])
    other = make_record([make_result("pgd", [0, 0, 1, 1], eps=0.1)], label="relu", clean_flags=[1, 1, 1, 1])
    other.dataset["indices"] = [4, 5, 6, 7]  # other samples
    table = compare_table([first, other])
    assert with_paired_columns(table, [first, other]) is table
    paired = make_record([make_result("pgd", [0, 0, 1, 1], eps=0.1)], label="relu", clean_flags=[1, 1, 1, 1])
    both = with_paired_columns(compare_table([first, paired]), [first, paired])
    assert PAIRED_COLUMNS_NOTE in both.notes and "paired clean only first" in both.headers
