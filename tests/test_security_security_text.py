"""Text from a shared record cannot act on the reader's screen: control characters (a terminal runs ESC sequences)
and Unicode bidirectional controls (U+202E reverses what follows it: "Trojan Source") reach no output as
themselves — HTML report, Markdown/terminal, LaTeX, CSV tables, log lines and the command line's error line — but as
their escapes (kwta_robust.visible_text)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.commands.console import LOG_FORMAT, VisibleFormatter
from kwta_robust.formats import render_records
from kwta_robust.html_report import build_report
from kwta_robust.results import save_record
from kwta_robust.visible_text import visible

#: Cursor up and erase the line (a terminal would overwrite the row above), a right-to-left override, NUL, BEL,
#: a C1 CSI (an ESC [ to some terminals), a right-to-left isolate.
HOSTILE = "kwta\x1b[1A\x1b[2K\u202e0.25\x00\x07\x9b2J\u2067x"
SHOWN = "kwta\\x1b[1A\\x1b[2K\\u202e0.25\\x00\\x07\\x9b2J\\u2067x"
RAW = ("\x1b", "\u202e", "\x00", "\x07", "\x9b", "\u2067")


def _evil_record():
    results = [make_result(HOSTILE, [1, 0, 1, 0]), make_result("pgd", [0, 0, 1, 0], position=1, cumulative=True)]
    record = make_record(results, label=HOSTILE)
    record.dataset["name"] = HOSTILE
    return record


def _raw_in(text: str) -> list[str]:
    return [ch for ch in RAW if ch in text]


def test_visible_writes_controls_as_escapes_and_keeps_other_text() -> None:
    assert visible(HOSTILE) == SHOWN
    own = "kwta 0.1 — Linf 0.3: 52.0 % (47.1–56.8)\t< 1e-6, k/N \\ weight sparsity, 中文, עברית\n"
    assert visible(own) is own
    assert visible("\x7f\x1f\u061c\u200e\u200f\u202a\u2069") == "\\x7f\\x1f\\u061c\\u200e\\u200f\\u202a\\u2069"


def test_the_html_report_shows_no_control_character_of_a_record() -> None:
    page = build_report([_evil_record()])
    assert _raw_in(page) == []
    assert SHOWN in page  # the label, the dataset name and the attack's label, as escapes


@pytest.mark.parametrize("fmt", ["md", "wide", "latex", "csv"])
def test_tables_show_no_control_character_of_a_record(fmt: str) -> None:
    text = render_records([_evil_record()], fmt, "wide") + render_records([_evil_record()], fmt, "long")
    assert _raw_in(text) == []
    assert "\\x1b" in text or "\\textbackslash{}x1b" in text


def test_the_table_command_prints_no_escape_sequence_of_a_record(tmp_path: Path, capsys) -> None:
    save_record(_evil_record(), tmp_path / "evil.json")
    assert main(["table", str(tmp_path / "evil.json")]) == 0
    out = capsys.readouterr().out
    assert _raw_in(out) == [] and "kwta\\x1b[1A" in out


def test_the_error_line_shows_no_escape_sequence(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "runs\x1b[2J\u202e"
    folder.mkdir()
    assert main(["table", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: record: ") and "is a folder" in err
    assert _raw_in(err) == [] and "runs\\x1b[2J\\u202e" in err


def test_log_lines_show_no_escape_sequence() -> None:
    record = logging.LogRecord("kwta_robust.html_report", logging.INFO, __file__, 1, "HTML report written to %s",
                               (f"{HOSTILE}.html",), None)
    assert VisibleFormatter(LOG_FORMAT).format(record) == f"INFO kwta_robust.html_report: HTML report written to " \
                                                          f"{SHOWN}.html"
