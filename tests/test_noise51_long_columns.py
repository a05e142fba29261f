"""Session 51: the long layout (``evaluate --format csv``, ``table --layout long``) and ``render_records`` in CSV and
JSON carry the noise columns and the paired columns the wide CSV/JSON got in session 50 (``kwta_robust.noise_columns``,
``kwta_robust.paired_columns``), with the same numbers; they held the notes' text alone. The noise columns keep their
names, on each record's clean row; the paired numbers sit on the row each compares (clean, worst case at a threat
point) under one group of names (``paired diff (points)`` ...), so the long layout's width does not grow with the
threat points."""

from __future__ import annotations

import csv
import io
import json

from attacks.base import format_eps
from eval_helpers import make_result
from kwta_robust.formats import render_records, render_stdout
from kwta_robust.results import Accuracy, EvalRecord, WorstCase
from test_noise50_names import _records as _noise_records

DATA = ("noise ", "paired ")  # how the noise and the paired columns' names start


def _records() -> list[EvalRecord]:
    """Two records of noise.yaml's probes on the same 40 samples (two numenta, a Gaussian) and PGD at two threat
    points, each with its worst case."""
    records = _noise_records()
    for i, record in enumerate(records):
        for eps in (0.1, 0.3):
            flags = [int((j + i) % (3 if eps == 0.1 else 2) > 0) for j in range(40)]
            record.results.append(make_result("pgd", flags, eps=eps))
            record.put_worst(WorstCase("linf", eps, format_eps(eps), ["pgd"], Accuracy.of(sum(flags), 40),
                                       [-1 if f else 0 for f in flags]))
    return records


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _data(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith(DATA) and not k.startswith("noise score")}  # its own column


def _noise(row: dict) -> dict:
    return {k: v for k, v in _data(row).items() if k.startswith("noise ")}


def _paired(row: dict, name: str | None = None) -> dict:
    """A long row's paired cells, or (``name``) a wide row's of the paired row ``name``, under the long names."""
    prefix = "paired " if name is None else f"paired {name} "
    return {"paired " + k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)
            and (name is not None or not k.startswith(("paired clean", "paired worst case")))}


def test_the_long_csv_holds_the_wide_csvs_noise_and_paired_numbers_on_the_rows_they_measure() -> None:
    records = _records()
    wide = _rows(render_stdout(records, "csv"))
    columns = list(_data(wide[0]))
    assert any(c.startswith("noise numenta [2] level 0.5") for c in columns)
    assert any(c.startswith("noise gaussian paired diff") for c in columns)
    assert any(c.startswith("paired clean diff") for c in columns)
    for text in (render_stdout(records, "csv", detail=True), render_records(records, "csv", "long")):
        long = _rows(text)
        assert not any(k.startswith(("paired clean", "paired worst case")) for k in long[0])  # one group of names
        for i, (record, row) in enumerate(zip(records, wide)):
            mine = [r for r in long if r["model"] == record.label]
            clean, *others = mine
            assert (clean["threat"], clean["attack"]) == ("none", "clean")
            assert _noise(clean) == _noise(row)  # the same names, the same digits
            assert others and all(all(v == "" for v in _noise(r).values()) for r in others)
            worst = [r for r in others if r["attack"] == "worst case"]
            assert worst and _paired(clean) == _paired(row, "clean")
            for r in worst:
                assert _paired(r) == _paired(row, f"worst case {r['threat']}")
            assert all(all(v == "" for v in _paired(r).values()) for r in others if r["attack"] != "worst case")
            assert any(v != "" for v in _paired(clean).values()) == (i > 0)  # the first record: nothing to pair
    assert _data(wide[1])["noise gaussian paired only first"] != ""


def test_one_records_long_csv_has_its_noise_columns_as_evaluate_prints_it() -> None:
    record = _records()[0]
    rows = _rows(render_stdout([record], "csv", detail=True))
    score = float(rows[0]["noise numenta [1] score"])
    assert score == record.noise[0].result["noise_score"]
    assert rows[0]["noise numenta [1] level 0.5 (%)"] == _rows(render_stdout([record], "csv"))[0][
        "noise numenta [1] level 0.5 (%)"]


def test_render_records_json_keeps_them_as_numbers_in_both_layouts() -> None:
    records = _records()
    printed = json.loads(render_stdout(records, "json"))
    wide = json.loads(render_records(records, "json"))
    assert wide["columns"] == printed["columns"] and wide["rows"] == printed["rows"]
    long = json.loads(render_records(records, "json", "long"))
    clean = [r for r in long["rows"] if r["attack"] == "clean"]
    assert [_noise(r) for r in clean] == [_noise(r) for r in wide["rows"]]
    assert [_paired(r) for r in clean] == [_paired(r, "clean") for r in wide["rows"]]
    assert isinstance(clean[1]["noise gaussian paired sign p"], float)
    assert isinstance(clean[1]["paired only first"], int)
    assert sum(note.startswith("noise columns (after flags)") for note in long["notes"]) == 1
    assert any(note.startswith("long layout: the noise columns") for note in long["notes"])
    assert sum(note.startswith("paired columns (long layout)") for note in long["notes"]) == 1
    for fmt in ("md", "wide", "latex"):  # formats for people: the notes and the paired table, no such columns
        assert "noise numenta [1] score" not in render_records(records, fmt, "long") + render_records(records, fmt)
