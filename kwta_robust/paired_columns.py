"""The paired comparison's accuracy rows as data columns of the machine-readable record tables (``--format csv`` and
``json`` of ``table``, ``compare``, ``quickstart``): before, only its noise rows were columns
(:mod:`kwta_robust.noise_columns`); the clean and worst-case rows (:func:`kwta_robust.paired.paired_table`) were
Markdown text alone.

After every other column (``flags``, then the noise columns: their names and places as before), with two or more
records on the same samples, a group of columns per row of the paired table, named by its accuracy cell (``clean``,
``worst case Linf 0.1``: the threat point written as the wide table's columns write it), ``NAME`` below:

* ``paired NAME diff (points)``: the first row's model's accuracy (worst case: robust accuracy) minus this row's
  model's, in percentage points, with ``paired NAME diff ci_low (points)`` / ``ci_high (points)``, its 95% interval
  for paired proportions (Newcombe 1998, method 10 with its continuity correction:
  :func:`~kwta_robust.paired.paired_difference_interval`);
* ``paired NAME only first`` / ``paired NAME only second``: the samples correct (robust) under the first row's model
  alone / this row's alone, the discordant pairs;
* ``paired NAME McNemar p``: McNemar's exact two-sided test on them (:func:`~kwta_robust.paired.mcnemar_exact_p`).

They hold the paired table's numbers to 12 significant digits (:data:`~kwta_robust.numbers.TABLE_DIGITS`, the
difference computed from the counts), not rounded for reading as the table's, on the row of each record paired with
the first (:func:`~kwta_robust.paired.paired_records`); the first row, a record evaluated on other samples and a
threat point one of the two records lacks have empty cells. Both accuracies are upper bounds from the attacks run:
a small p says the measured numbers differ, not which model resists a stronger attack.
"""

from __future__ import annotations

import math
from typing import Sequence

from kwta_robust.numbers import percent_of
from kwta_robust.paired import CLEAN, PairedComparison, paired_by_record
from kwta_robust.report import Cell, Table, point_text
from kwta_robust.results import EvalRecord

#: What each paired row gives, in column order (the diff's interval bounds follow it).
PAIRED_FIELDS: tuple[str, ...] = ("diff (points)", "diff ci_low (points)", "diff ci_high (points)", "only first",
                                  "only second", "McNemar p")

#: The note that says what the paired columns hold (JSON keeps the notes; CSV has the column names alone).
PAIRED_COLUMNS_NOTE = (
    "paired columns (after flags and the noise columns), per row of the paired comparison (NAME: clean, or worst "
    "case at a threat point, named as its worst case column) on each row evaluated on the first row's samples: paired "
    "NAME diff "
    "(points), the first row's model's accuracy minus this row's, in points, with ci_low / ci_high, its 95% interval "
    "for paired proportions (Newcombe 1998); paired NAME only first / only second, the samples correct (worst case: "
    "robust) under the first row's model alone / this row's alone; paired NAME McNemar p, McNemar's exact test on "
    "them; empty: the first row, other samples, or a threat point one of the two lacks. Both accuracies are upper "
    "bounds from the attacks run: a small p says the measured numbers differ, not which model resists a stronger "
    "attack")


def paired_name(c: PairedComparison) -> str:
    """The accuracy a comparison is of, as the paired table's accuracy column writes it: ``clean``, ``worst case
    Linf 0.1``."""
    return CLEAN if c.norm is None else f"worst case {point_text(c.norm, c.eps_text or '')}"


def _cells(c: PairedComparison | None) -> list[Cell]:
    """One comparison's cells, in :data:`PAIRED_FIELDS` order (NaN, of no samples: empty in CSV/JSON): the difference
    in points from the counts (:func:`~kwta_robust.numbers.percent_of`: exact where it is, -2.5 for 5 of 200), it,
    its bounds and the p-value to :data:`~kwta_robust.numbers.TABLE_DIGITS` significant digits (``computed``), so a
    symmetric interval's bounds read as one number with two signs (they differed in their last digits)."""
    if c is None:
        return [Cell(None)] * len(PAIRED_FIELDS)
    low, high = c.interval
    diff = percent_of(c.only_reference - c.only_other, c.n) if c.n else math.nan
    return [Cell(diff, computed=True), Cell(100.0 * low, computed=True), Cell(100.0 * high, computed=True),
            Cell(c.only_reference), Cell(c.only_other), Cell(c.p_value, computed=True)]


def _by_record(records: Sequence[EvalRecord]) -> dict[int, dict[str, PairedComparison]]:
    """Per record evaluated on the first one's samples (by ``id``), its comparisons with the first by
    :func:`paired_name`; empty where there is none (fewer than two records, other samples)."""
    pairs = paired_by_record(records) if len(records) > 1 else []
    return {id(other): {paired_name(c): c for c in found} for other, found in pairs}


def with_paired_columns(table: Table, records: Sequence[EvalRecord]) -> Table:
    """``table`` (a row per record of ``records``, :func:`~kwta_robust.report.compare_table`, the noise columns
    after it or not) with the paired columns after its own (module docstring) and :data:`PAIRED_COLUMNS_NOTE`;
    ``table`` itself where no record was evaluated on the first one's samples."""
    by_record = _by_record(records)
    if not by_record:
        return table
    names = list(dict.fromkeys(name for found in by_record.values() for name in found))  # clean, then the points
    headers = [f"paired {name} {field}" for name in names for field in PAIRED_FIELDS]
    empty: dict[str, PairedComparison] = {}
    rows = [row + [cell for name in names for cell in _cells(by_record.get(id(rec), empty).get(name))]
            for row, rec in zip(table.rows, records)]
    return Table(table.headers + headers, rows, [*table.notes, PAIRED_COLUMNS_NOTE], table.title, table.key_columns,
                 table.wrap_columns)


#: The long layout's paired columns (:func:`long_paired_cells`): one group, on the row whose accuracy it compares.
LONG_PAIRED_HEADERS: tuple[str, ...] = tuple(f"paired {field}" for field in PAIRED_FIELDS)

#: What the long layout's paired columns hold (JSON keeps the notes; CSV has the column names alone).
LONG_PAIRED_NOTE = (
    "paired columns (long layout): on a record's clean row and on each of its worst case rows, where it was evaluated "
    "on the first record's samples, that row's paired comparison with the first record (the wide layout's paired NAME "
    "columns, NAME the row's accuracy): paired diff (points), the first record's accuracy minus this one's, with "
    "ci_low / ci_high, its 95% interval for paired proportions (Newcombe 1998); paired only first / only second, the "
    "discordant samples; paired McNemar p, McNemar's exact test on them; empty on the other rows")


def long_paired_cells(records: Sequence[EvalRecord], tables: Sequence[Table]) -> list[list[list[Cell]]] | None:
    """Per record of ``records`` and row of its long table (``tables``, :func:`~kwta_robust.report.detail_table`: the
    threat in column 1, the attack in column 2), the :data:`LONG_PAIRED_HEADERS` cells: the comparison with the first
    record of the accuracy the row gives (its clean row, the first: ``clean``; a ``worst case`` row: the worst case at
    its threat point, :func:`paired_name`), empty on the other rows; ``None`` where no record was evaluated on the
    first one's samples. One group of columns for every threat point, not one per threat point on one row: the long
    layout's width stays that of one comparison, and its size grows with the results alone."""
    by_record = _by_record(records)
    if not by_record:
        return None
    out = []
    for record, table in zip(records, tables):
        found = by_record.get(id(record), {})
        out.append([_cells(found.get(_row_name(r, row))) for r, row in enumerate(table.rows)])
    return out


def _row_name(position: int, row: Sequence[Cell]) -> str | None:
    """The paired table's name of the accuracy the long-table row ``row`` at ``position`` gives: ``clean`` (its
    first row), ``worst case Linf 0.1`` (a ``worst case`` row, kind ``-``: not an attack a user labelled so), else
    ``None``."""
    if position == 0:
        return CLEAN
    return f"worst case {row[1].value}" if (row[2].value, row[3].value) == ("worst case", "-") else None
