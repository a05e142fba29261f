"""Session 50's noise reporting, data columns (kwta_robust.noise_columns): ``kwta-robust table --format csv|json``
gives every noise probe's score and accuracy per level, and the paired noise rows' numbers, as numbers in columns of
stable names (before: the first numenta probe's score alone; the rest was Markdown text)."""

from __future__ import annotations

import csv
import io
import json

from kwta_robust.cli import main
from kwta_robust.noise_ci import level_intervals, score_interval
from kwta_robust.numbers import table_number
from kwta_robust.paired import noise_pairs
from kwta_robust.results import save_record
from test_noise50_intervals import LEVELS, _record
from test_noise50_names import _records


def _table(tmp_path, capsys, records, fmt: str) -> str:
    paths = []
    for record in records:
        paths.append(tmp_path / f"{record.label}.json")
        save_record(record, paths[-1])
    assert main(["table", *map(str, paths), "--format", fmt]) == 0
    return capsys.readouterr().out


def test_csv_holds_each_probes_score_and_levels_and_the_paired_numbers(tmp_path, capsys) -> None:
    records = [_record(40, 1, "kwta", kind="gaussian"), _record(40, 2, "relu", kind="gaussian")]
    rows = list(csv.DictReader(io.StringIO(_table(tmp_path, capsys, records, "csv"))))
    name = "noise gaussian"
    for record, row in zip(records, rows):
        probe = record.noise[0]
        assert float(row[f"{name} score"]) == table_number(probe.result["noise_score"])  # 12 digits (csv51)
        assert (float(row[f"{name} score ci_low"]), float(row[f"{name} score ci_high"])) == \
            tuple(map(table_number, score_interval(probe, 40)))
        for level, accuracy, (low, high) in zip(LEVELS, probe.result["accuracy"], level_intervals(probe, 40)):
            assert float(row[f"{name} level {level:g} (%)"]) == table_number(100 * accuracy)
            assert float(row[f"{name} level {level:g} ci_low (%)"]) == table_number(100 * low)
            assert float(row[f"{name} level {level:g} ci_high (%)"]) == table_number(100 * high)
        assert row[f"{name} level 0 ci_low (%)"] == row["clean ci_low (%)"]  # level 0: the clean column's Wilson
    [pair], _ = noise_pairs(*records)
    paired = [f"{name} paired {what}" for what in ("diff", "diff ci_low", "diff ci_high", "only first", "only second",
                                                      "sign p")]
    assert all(rows[0][column] == "" for column in paired)  # the first record is the reference
    assert [float(rows[1][column]) for column in paired] == [
        *map(table_number, (pair.difference, *pair.interval)), pair.higher, pair.lower, table_number(pair.p_value)]


def test_json_gives_them_as_numbers_under_the_names_every_table_uses(tmp_path, capsys) -> None:
    data = json.loads(_table(tmp_path, capsys, _records(), "json"))
    first, second = data["rows"]
    for name in ("noise numenta [1]", "noise numenta [2]", "noise gaussian"):
        score = first[f"{name} score"]  # a count summed over levels: an integer where it is whole (sweep52)
        assert type(score) is (int if float(score).is_integer() else float)
        assert isinstance(first[f"{name} level 0.5 (%)"], float)
        assert first[f"{name} paired only first"] is None
        assert isinstance(second[f"{name} paired only first"], int)
        assert isinstance(second[f"{name} paired sign p"], float)
    assert any(note.startswith("noise columns (after flags)") for note in data["notes"])
    assert data["columns"].index("flags") < data["columns"].index("noise numenta [1] score")  # old columns first
