"""Markdown outputs escape the characters of user-controlled text (labels, notes, titles) that GitHub-flavoured
Markdown would format: before, only ``|`` and line breaks were handled, so a model labelled ``<script>...`` was raw
HTML, ``*bold*`` italics and ``[x](y)`` a link in ``table``, ``compare.md`` and ``report --out *.md``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.formats import render_records, render_stdout
from kwta_robust.formats.md import to_markdown
from kwta_robust.md_text import md_cell, md_escape
from kwta_robust.report import Cell, Table
from kwta_robust.results import save_record

EVIL = "<script>x</script> *bold* [x](y) dir\\(1)"
EVIL_MD = "\\<script>x\\</script> \\*bold\\* \\[x\\](y) dir\\\\(1)"  # each special character after a backslash
PLAIN = "kwta_cnn-v2 (0.1) < 1e-6 & co"


@pytest.mark.parametrize(("text", "escaped"), [
    (EVIL, EVIL_MD), ("_x_ __init__ a_b", "\\_x\\_ \\_\\_init\\_\\_ a_b"), ("&lt; &#60; & co", "\\&lt; \\&#60; & co"),
    ("`code` ~~gone~~", "\\`code\\` \\~\\~gone\\~\\~"),
    ("![i](u) [r][1] [d]: u", "!\\[i\\](u) \\[r\\]\\[1\\] \\[d\\]: u"),
    ("a|b\nc", "a\\|b c"), (PLAIN, PLAIN), ("[kwta] budget check", "[kwta] budget check"),
    # one of a paired character, or a backslash before a letter, renders as itself: left as written
    ("step 2.5*eps/steps", "step 2.5*eps/steps"), ("x_ `a ~b", "x_ `a ~b"), ("C:\\models", "C:\\models")])
def test_md_cell_escapes_what_would_render_and_nothing_else(text: str, escaped: str) -> None:
    assert md_cell(text) == escaped


@pytest.mark.parametrize(("text", "escaped"), [
    ("# h", "\\# h"), ("- x", "\\- x"), ("+ x", "\\+ x"), ("* x", "\\* x"), ("> q", "\\> q"),
    ("12. x", "12\\. x"), ("3) x", "3\\) x"),
    ("[x] done", "\\[x\\] done"), ("title #", "title \\#"), ("kwta: pgd 4.0% - ok", "kwta: pgd 4.0% - ok")])
def test_a_list_item_or_heading_escapes_its_leading_structure(text: str, escaped: str) -> None:
    assert md_escape(text, block_start=True) == escaped


def _records():
    results = [make_result("pgd", [1, 1, 0, 0], eps=0.1)]
    return [make_record(results, label=EVIL), make_record(results, label=PLAIN)]


def test_wide_table_escapes_the_label_and_keeps_a_plain_one() -> None:
    lines = render_records(_records(), "wide").splitlines()
    assert lines[2].startswith(f"| {EVIL_MD} | kwta | 4 |")
    assert lines[3].startswith(f"| {PLAIN} | kwta | 4 |")


def test_terminal_tables_escape_the_label_in_headers_and_rows() -> None:
    text = render_stdout(_records(), "md")
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in text.splitlines() if line.startswith("| ")]
    assert [row[0] for row in cells[:3]] == ["model", EVIL_MD, PLAIN]  # the overview's rows
    assert next(row for row in cells if row[0] == "Linf 0.1")[1:] == [EVIL_MD, PLAIN]  # a column per record
    assert not re.search(r"(?<!\\)(<script>|\*bold|\[x\]\(y\))", text)  # none left unescaped


def test_notes_and_title_are_escaped_and_a_cells_mark_is_kept() -> None:
    table = Table(["model"], [[Cell(0.5, (0.4, 0.6), True, "*")]], ["1. <b>x</b>", "[kwta] *a* b_c"], "# t #")
    assert to_markdown(table).splitlines() == [
        "### \\# t \\#", "", "| model |", "|---|", "| 50.0 (40.0–60.0)* |", "",
        "- 1\\. \\<b>x\\</b>", "- [kwta] \\*a\\* b_c"]


def test_the_markdown_report_escapes_the_label(tmp_path: Path) -> None:
    paths = []
    for i, rec in enumerate(_records()):
        paths.append(tmp_path / f"r{i}.json")
        save_record(rec, paths[-1])
    out = tmp_path / "r.md"
    assert main(["report", *map(str, paths), "--out", str(out), "--title", "*t*"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "### \\*t\\*" and lines[4].startswith(f"| {EVIL_MD} | kwta | 4 |")
    assert any(line.startswith(f"| {EVIL_MD} − {PLAIN} | clean |") for line in lines)  # the paired comparison
