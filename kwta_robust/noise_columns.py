"""Noise results as data columns of the machine-readable record tables (``--format csv`` and ``json`` of ``table``,
``compare``, ``quickstart``): before, only the first numenta probe's score was a number there (the ``noise score``
column); the other probes' scores and accuracy per level, and the paired noise rows (:mod:`kwta_robust.paired`), were
text in the notes and the Markdown tables alone.

After the record table's columns (``flags`` last, as before), per noise probe of the records, named as the matrices
name it (:func:`kwta_robust.noise_matrix.noise_metrics`: ``noise numenta``, ``noise numenta [2]`` for the second
settings of a kind among the records, so the same probe keeps its name in every table):

* ``NAME score``: its noise score (Ahmad & Scheinkman 2019: correct classifications summed over its levels, averaged
  over its draws), with ``ci_low`` / ``ci_high`` where some record has the score's t interval (from 30 images:
  :func:`kwta_robust.noise_ci.score_interval`);
* ``NAME level L (%)``: its accuracy at level ``L`` in %, every level (0, the clean input, too), with ``ci_low (%)`` /
  ``ci_high (%)`` (Wilson at level 0 and with one draw, else the t interval from 30 images:
  :func:`kwta_robust.noise_ci.level_intervals`);
* with two or more records on the same samples, on the row of each record paired with the first
  (:func:`kwta_robust.paired.paired_records`) where both ran the probe with its settings and kept per-sample counts:
  ``NAME paired diff`` (the mean per-sample score difference, first row's model minus this row's, in correct answers
  per sample; ``ci_low`` / ``ci_high``: its paired t interval, from 30 samples), ``NAME paired only first`` /
  ``NAME paired only second`` (samples scoring higher under the first row's model / this row's) and ``NAME paired
  sign p`` (the exact two-sided sign test on them): the Markdown paired table's noise row, as numbers.

A record without the probe, or the first row in the paired columns, has empty cells there.
"""

from __future__ import annotations

import math
from typing import Sequence

from kwta_robust.noise_ci import methods_text, probe_samples, sample_scores
from kwta_robust.noise_matrix import (NoiseLevel, NoiseMetric, level_texts, metric_probe, noise_metrics, noise_value,
                                      score_cell)
from kwta_robust.paired import NoisePairedComparison, paired_records
from kwta_robust.report import Cell, Table, record_name
from kwta_robust.results import EvalRecord

#: The note that says what the noise columns hold (JSON keeps the notes; CSV has the column names alone); ``{levels}``:
#: the interval methods of the level columns shown (:func:`noise_columns_note`).
NOISE_COLUMNS_NOTE = (
    "noise columns (after flags), per noise probe named as the matrices name it (noise numenta; noise numenta [2]: the "
    "second settings of a kind among the records): NAME score, its noise score (with ci_low / ci_high: the t interval "
    "over the images, from n ≥ 30); NAME level L (%), its accuracy at level L{levels}; on each row evaluated on the "
    "first row's samples: NAME paired diff, the mean per-sample score difference, first row's model minus this row's, "
    "with its paired t interval (from n ≥ 30), NAME paired only first / only second, the samples scoring higher under "
    "the first row's / this row's model, and NAME paired sign p, the exact two-sided sign test on them; empty: no such "
    "probe")


def noise_columns_note(records: Sequence[EvalRecord]) -> str:
    """:data:`NOISE_COLUMNS_NOTE` with the interval methods its level columns show for ``records``
    (:func:`~kwta_robust.noise_ci.methods_text`: ``Wilson`` with one draw; it named Wilson and t from n ≥ 30 whatever
    the columns held)."""
    methods = methods_text([(probe, probe_samples(probe, rec)) for rec in records for probe in rec.noise])
    return NOISE_COLUMNS_NOTE.format(levels=f" with its 95% interval ({methods})" if methods else " (no interval)")


def _level_cell(value: NoiseLevel | None) -> Cell:
    if value is None:
        return Cell.acc(None)
    bounds = (value.ci_low, value.ci_high)  # NaN: no interval
    return Cell(value.accuracy, None if any(math.isnan(b) for b in bounds) else bounds, True)


def _paired(reference: EvalRecord, other: EvalRecord, metric: NoiseMetric) -> NoisePairedComparison | None:
    """``other`` against ``reference`` on ``metric``'s probe, ``None`` where either lacks it or its counts."""
    mine, theirs = metric_probe(reference, metric), metric_probe(other, metric)
    if mine is None or theirs is None:
        return None
    n = len(reference.clean_flags)
    a, b = sample_scores(mine, n), sample_scores(theirs, n)
    if a is None or b is None:
        return None
    return NoisePairedComparison(record_name(reference), record_name(other), "", tuple(a), tuple(b))


def _paired_cells(c: NoisePairedComparison | None) -> list[Cell]:
    if c is None:
        return [Cell(None)] * 4
    low, high = c.interval
    return [Cell(c.difference, None if math.isnan(low) else (low, high), computed=True), Cell(c.higher),
            Cell(c.lower), Cell(c.p_value, computed=True)]


def with_noise_columns(table: Table, records: Sequence[EvalRecord]) -> Table:
    """``table`` (a row per record of ``records``, :func:`~kwta_robust.report.compare_table`) with the noise columns
    after its own (module docstring) and :func:`noise_columns_note`; ``table`` itself where no record ran a probe."""
    metrics = noise_metrics(records)
    if not metrics:
        return table
    reference, *others = paired_records(records)
    headers: list[str] = []
    columns: list[list[Cell]] = []  # per column, [records]
    for name, metric in metrics.items():
        headers.append(f"{name} score")
        columns.append([score_cell(value if not isinstance(value, NoiseLevel) else None)
                        for value in (noise_value(rec, metric) for rec in records)])
        for i, level in enumerate(level_texts(metric.settings["levels"])):
            at = NoiseMetric(metric.kind, metric.settings, metric.note, i)
            headers.append(f"{name} level {level}")
            columns.append([_level_cell(value if isinstance(value, NoiseLevel) else None)
                            for value in (noise_value(rec, at) for rec in records)])
        pairs = {id(other): _paired(reference, other, metric) for other in others}
        if any(c is not None for c in pairs.values()):
            headers += [f"{name} paired {what}" for what in ("diff", "only first", "only second", "sign p")]
            cells = [_paired_cells(pairs.get(id(rec))) for rec in records]
            columns += [[row[j] for row in cells] for j in range(4)]
    rows = [row + [column[r] for column in columns] for r, row in enumerate(table.rows)]
    return Table(table.headers + headers, rows, [*table.notes, noise_columns_note(records)], table.title,
                 table.key_columns, table.wrap_columns)
