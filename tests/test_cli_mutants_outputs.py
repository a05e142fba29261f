"""Mutation round on the commands that read records (``table``, ``report``, ``plugins``): the format an ``--out``
name implies, the checks before anything is written, the file written atomically, and the plug-in listing's
layout, each checked against hand-worked values or the file read back."""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import os
import re
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.commands.table import table_format
from kwta_robust.errors import ConfigError
from kwta_robust.results import save_record
from test_cli_mutants import write_record

# one PGD unit, robust on 2 of 4 samples: 50 %, Wilson 95 % interval [15.0039, 84.9961] (hand-checked), bounds to 12
# significant digits (csv51)
CSV_ROW = ["model", "kwta", "4", "100", "51.0109163545", "100", "50", "15.0038989152", "84.9961010848",
           "50", "15.0038989152", "84.9961010848", "none"]


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return write_record(tmp_path / "a.json")


def contradictory(tmp_path: Path, source: Path) -> Path:
    """``source`` with one flag more than it has samples."""
    data = json.loads(source.read_text())
    data["results"][0]["flags"].append(1)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    return bad


# ---- table ----

@pytest.mark.parametrize("name", ["t.csv", "T.CSV"])
def test_an_out_csv_name_writes_csv(tmp_path: Path, record: Path, name: str) -> None:
    out = tmp_path / name
    assert main(["table", str(record), "--out", str(out)]) == 0
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[1] == CSV_ROW and rows[0][:3] == ["model", "activation", "n"]


def test_an_out_tex_name_writes_latex_and_json_writes_json(tmp_path: Path, record: Path) -> None:
    tex = tmp_path / "t.tex"
    assert main(["table", str(record), "--out", str(tex)]) == 0
    lines = tex.read_text().splitlines()
    assert lines[0] == r"\begin{tabular}{lrrrrrl}" and lines[4].startswith("model & kwta & 4 & 100.0")
    out = tmp_path / "t.json"
    assert main(["table", str(record), "--out", str(out)]) == 0
    json.loads(out.read_text())  # JSON, not Markdown


def test_table_format_choice() -> None:
    assert table_format(None, None) == "md" and table_format(None, Path("t.txt")) == "md"
    assert table_format(None, Path("t.Tex")) == "latex" and table_format("csv", Path("t.txt")) == "csv"
    assert table_format("wide", Path("t.md")) == "wide" and table_format("json", Path("t.JSON")) == "json"
    with pytest.raises(ConfigError, match=r"^--format: md does not match --out t.csv \(a .csv file holds csv\)"):
        table_format("md", Path("t.csv"))


def test_the_long_layout_has_a_row_per_attack_and_eps(record: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["table", str(record), "--format", "csv", "--layout", "long"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows != [] and rows[1] != CSV_ROW and any("pgd" in row for row in rows[1:])
    assert main(["table", str(record), "--format", "csv"]) == 0
    assert list(csv.reader(io.StringIO(capsys.readouterr().out)))[1] == CSV_ROW


def test_a_partial_record_never_makes_a_matrix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    partial = write_record(tmp_path / "p.json", status="partial")
    assert main(["table", str(partial), "--allow-partial", "--matrix"]) == 2
    assert capsys.readouterr().err == (f"error: {partial}: partial record (its evaluation did not finish); re-run its "
                                       "command to finish it (matrices take complete records only)\n")
    assert main(["table", str(partial)]) == 2
    assert capsys.readouterr().err.endswith("or pass --allow-partial to render it marked [partial]\n")
    assert main(["table", str(partial), "--allow-partial", "--format", "csv"]) == 0
    assert "[partial]" in capsys.readouterr().out


def test_protocol_and_matrix_together_are_refused(record: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["table", str(record), "--protocol", "--matrix"]) == 2
    assert capsys.readouterr().err == "error: --protocol: give either --protocol or --matrix, not both\n"


def test_settings_that_differ_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                         capsys: pytest.CaptureFixture) -> None:
    paths = []
    for steps in (10, 40):
        unit = make_result("pgd", [1, 0, 1, 0], eps=0.1)
        unit.settings = {"steps": steps}
        paths.append(tmp_path / f"s{steps}.json")
        save_record(make_record([unit], label=f"s{steps}"), paths[-1])
    with caplog.at_level(logging.WARNING):
        assert main(["table", *map(str, paths), "--format", "csv"]) == 0
    notes = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(notes) == 1 and "pgd: steps 10 in" in notes[0] and "40" in notes[0]


def test_the_table_file_is_replaced_atomically(tmp_path: Path, record: Path) -> None:
    out = tmp_path / "t.md"
    out.write_text("old table\n")
    keep = tmp_path / "keep.md"
    os.link(out, keep)  # a second name of the old file: an in-place write would change it too
    assert main(["table", str(record), "--out", str(out)]) == 0
    assert keep.read_text() == "old table\n" and os.stat(out).st_ino != os.stat(keep).st_ino
    assert "| model" in out.read_text() or "model" in out.read_text().splitlines()[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "keep.md", "t.md"]  # no temp file left


@pytest.mark.parametrize("command", ["table", "report"])
def test_outputs_that_would_destroy_an_input_are_refused(tmp_path: Path, record: Path, command: str,
                                                         capsys: pytest.CaptureFixture) -> None:
    before = record.read_text()
    assert main([command, str(record), "--out", str(record)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out: {record} is also given as RECORD {record}") and err.count("\n") == 1
    source = tmp_path / "mine.py"
    source.write_text("print('mine')\n")
    assert main([command, str(record), "--out", str(source)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --out: {source} is not a")
    assert source.read_text() == "print('mine')\n" and record.read_text() == before


@pytest.mark.parametrize("command", ["table", "report"])
def test_a_record_given_twice_or_contradictory_is_refused(tmp_path: Path, record: Path, command: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    out = ["--out", str(tmp_path / ("r.html" if command == "report" else "t.md"))]
    again = f"{tmp_path}/./{record.name}"  # another spelling of the same file
    assert main([command, str(record), again, *out]) == 2
    err = capsys.readouterr().err
    assert err == f"error: RECORD {again}: the same file as RECORD {record}; give each record once\n"
    bad = contradictory(tmp_path, record)
    assert main([command, str(bad), *out]) == 2
    assert capsys.readouterr().err == f"error: {bad}: results[0] (pgd, Linf 0.1): flags: 5 entries for 4 samples\n"
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "t.md").exists()


# ---- report ----

def test_report_title_and_sweep_only(tmp_path: Path, record: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(record), "--out", str(out), "--title", "Run <7>"]) == 0
    assert re.search(r"<title>([^<]*)</title>", out.read_text()).group(1) == html.escape("Run <7>")
    assert main(["report", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: report: give RECORD.json files and/or --sweep DIR\n"
    missing = tmp_path / "nosuch"
    assert main(["report", "--sweep", str(missing), "--out", str(out)]) == 2  # --sweep alone is a valid request
    assert capsys.readouterr().err.startswith(f"error: --sweep: '{missing}' is not a directory")


# ---- plugins ----

def test_plugins_lists_each_kind_once_with_its_own_rows_aligned(capsys: pytest.CaptureFixture) -> None:
    assert main(["plugins", "formats", "executors", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert main(["plugins", "formats", "executors", "formats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    headers = [i for i, line in enumerate(lines) if not line.startswith("  ")]
    assert [lines[i].split(" ")[0] for i in headers] == ["formats", "executors"]
    for start, end, kind in ((headers[0], headers[1], "formats"), (headers[1], len(lines), "executors")):
        mine = [r for r in rows if r["kind"] == kind]
        width = max(len(r["name"]) for r in mine)
        body = lines[start + 1:end]
        assert len(body) == len(mine) and {"csv", "latex", "md"} <= {r["name"] for r in rows if r["kind"] == "formats"}
        for line, row in zip(body, mine):
            assert line.startswith(f"  {row['name'].ljust(width)}  {row['summary']}  [")
