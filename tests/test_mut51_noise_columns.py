"""Mutation review (mut51) of :mod:`kwta_robust.noise_columns`: the columns note names the level intervals of every
record (not the first one's alone) and says ``(no interval)`` where none has per-sample counts; the paired columns
come wherever some row is paired, even beside a record on other samples; a paired diff without a t interval (under
30 samples) gets no ci columns; a record without the probe is no pair, and records without probes get no columns."""

from __future__ import annotations

import json

from kwta_robust.formats import render_stdout
from kwta_robust.noise_columns import noise_columns_note, with_noise_columns
from kwta_robust.report import compare_table
from test_noise50_intervals import _record


def test_the_note_names_the_methods_of_every_record() -> None:
    few, one = _record(12, 1, "few", draws=3), _record(12, 2, "one", draws=1)
    assert "accuracy at level L with its 95% interval (Wilson at level 0 and with one draw, else none below 30 " \
        "images);" in noise_columns_note([few, one])
    bare = _record(12, 3, "bare")
    del bare.noise[0].result["correct_counts"]  # no per-sample counts: no interval at any level
    assert "NAME level L (%), its accuracy at level L (no interval);" in noise_columns_note([bare])


def test_paired_columns_beside_a_record_on_other_samples() -> None:
    records = [_record(40, 1, "kwta"), _record(40, 2, "relu"), _record(40, 3, "elsewhere")]
    records[2].dataset["indices"] = list(range(40, 80))  # other samples: not paired with the first
    table = with_noise_columns(compare_table(records), records)
    column = table.headers.index("noise numenta paired diff")
    assert [row[column].value is None for row in table.rows] == [True, False, True]


def test_no_paired_interval_columns_below_30_samples() -> None:
    rows = json.loads(render_stdout([_record(12, 1, "a"), _record(12, 2, "b")], "json"))["rows"]
    assert isinstance(rows[1]["noise numenta paired diff"], float)
    assert not any("paired diff ci_" in key for row in rows for key in row)


def test_a_record_without_the_probe_has_empty_paired_cells_and_no_probe_no_columns() -> None:
    records = [_record(40, 1, "kwta"), _record(40, 2, "bare"), _record(40, 3, "relu")]
    records[1].noise.clear()  # the second record ran no probe
    table = with_noise_columns(compare_table(records), records)
    column = table.headers.index("noise numenta paired diff")
    assert [row[column].value is None for row in table.rows] == [True, True, False]
    plain = compare_table(records[1:2])
    assert with_noise_columns(plain, records[1:2]) is plain  # no probe: the table itself, no note
