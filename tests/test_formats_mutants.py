"""Mutation round on :mod:`kwta_robust.formats`: every table a user prints, rendered to exact, hand-worked text.

Tables are built by hand (:class:`~kwta_robust.report.Table` of :class:`~kwta_robust.report.Cell`) so that each
expected string below is worked out from the cells, not from the code under test: CSV read back with the ``csv``
module, JSON with ``json``, LaTeX and Markdown compared line by line."""

from __future__ import annotations

import csv
import io
import json

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.errors import ConfigError
from kwta_robust.formats import (
    FORMATS, format_help, get_format, render_matrices, render_records, render_records_as_matrices, render_stdout,
    render_table,
)
from kwta_robust.formats.csv import csv_text
from kwta_robust.formats.md import terminal_matrices
from kwta_robust.matrix import build_matrices
from kwta_robust.report import PARTIAL_MARK, PARTIAL_NOTE, Cell, Table
from test_matrix import grid_records

NAN, INF = float("nan"), float("inf")


def numbers_table(notes: list[str] | None = None) -> Table:
    """model | acc (an accuracy column with one text cell) | n | score."""
    return Table(["model", "acc", "n", "score"], [
        [Cell("=cmd"), Cell(0.875, (0.5, 0.96875), True), Cell(10), Cell(1 / 3)],
        [Cell("-62.0"), Cell("n/a"), Cell(7), Cell(NAN)],
        [Cell("plain" + PARTIAL_MARK), Cell(0.5, None, True), Cell(3), Cell(2.5)],
        [Cell("inf"), Cell(INF, (NAN, 0.25), True), Cell(True), Cell(None)],
        [Cell("bool"), Cell(True, (0.125, 1.0), True), Cell(0), Cell("@x")],
    ], list(notes or []), title="T")


CSV_HEADER = "model,acc (%),acc ci_low (%),acc ci_high (%),n,score"
CSV_ROWS = [
    "'=cmd,87.5,50,96.875,10,0.3333333333333333",  # a formula quoted; floats in full, as JSON (1/3 every digit)
    "-62.0,,,,7,",  # text that reads as a number kept; a text cell of an accuracy column and NaN are empty
    "plain [partial],50,,,3,2.5",  # no interval: empty bounds, not the value again
    "inf,,,25,True,",  # infinite value and NaN bound are missing; the finite bound stays
    "bool,,12.5,100,0,'@x",  # a bool is no accuracy
]


def test_csv_is_exact_text_with_numbers_in_percent_and_missing_values_empty() -> None:
    assert render_table(numbers_table(), "csv") == "\n".join([CSV_HEADER, *CSV_ROWS]) + "\n"


def test_csv_note_column_only_for_a_partial_record_and_only_on_its_rows() -> None:
    assert render_table(numbers_table(["another note"]), "csv").splitlines()[0] == CSV_HEADER
    rows = list(csv.reader(io.StringIO(render_table(numbers_table(["x", PARTIAL_NOTE]), "csv"))))
    assert rows[0] == CSV_HEADER.split(",") + ["note"]
    assert [r[-1] for r in rows[1:]] == ["", "", PARTIAL_NOTE, "", ""]
    assert all(len(r) == 7 for r in rows)
    marked_first = Table(["model"], [[Cell("[partial] first")], [Cell("x" + PARTIAL_MARK)]], [PARTIAL_NOTE])
    assert list(csv.reader(io.StringIO(render_table(marked_first, "csv"))))[1:] == [
        ["[partial] first", ""], ["x [partial]", PARTIAL_NOTE]]


def test_csv_headers_and_every_formula_start_are_defused() -> None:
    table = Table(["=SUM(A1)", "-h", "ok"], [[Cell("+a"), Cell("\tb"), Cell("@c")]])
    rows = list(csv.reader(io.StringIO(render_table(table, "csv"), newline="")))
    assert rows == [["'=SUM(A1)", "'-h", "ok"], ["'+a", "'\tb", "'@c"]]
    assert [csv_text(v) for v in ("-", "-x", "@x", "+1e-3", "=1", "a=b", "")] == \
        ["-", "'-x", "'@x", "+1e-3", "'=1", "a=b", ""]


def test_a_carriage_return_in_a_csv_cell_stays_in_its_row() -> None:
    """Python's writer quotes a field with ``\\n`` (the line terminator) but not one with a lone ``\\r``, which
    every CSV reader takes for the end of the row: a label ``a\\rb`` split its row in two."""
    table = Table(["model\rx", "n"], [[Cell("a\rb"), Cell(1)], [Cell("\rc"), Cell(2)], [Cell("d\r\ne"), Cell(3)]])
    rows = list(csv.reader(io.StringIO(render_table(table, "csv"), newline="")))
    assert rows == [["model\nx", "n"], ["a\nb", "1"], ["'\nc", "2"], ["d\ne", "3"]]


def test_an_infinite_number_is_a_missing_value_in_json_and_csv() -> None:
    """JSON has no infinity: a noise score read as ``inf`` (``1e999`` in a record) raised a raw ValueError."""
    table = Table(["model", "score", "acc"], [[Cell("a"), Cell(INF), Cell(-INF, (0.5, INF), True)],
                                              [Cell("b"), Cell(-INF), Cell(0.5, None, True)]])
    assert json.loads(render_table(table, "json"))["rows"] == [
        {"model": "a", "score": None, "acc (%)": None, "acc ci_low (%)": 50.0, "acc ci_high (%)": None},
        {"model": "b", "score": None, "acc (%)": 50.0, "acc ci_low (%)": None, "acc ci_high (%)": None}]
    assert render_table(table, "csv").splitlines()[1:] == ["a,,,50,", "b,,50,,"]


def test_csv_and_json_of_several_tables_are_one_table_with_every_row_and_note() -> None:
    """(The long layout: a table per record, merged; no one table's title is the merged table's.)"""
    first = Table(["model", "acc"], [[Cell("a"), Cell(0.25, (0.125, 0.5), True)]], ["note a"], title="A")
    second = Table(["model", "acc"], [[Cell("b"), Cell(0.75, None, True)]], ["note b"], title="B")
    assert get_format("csv").tables([first, second]) == \
        "model,acc (%),acc ci_low (%),acc ci_high (%)\na,25,12.5,50\nb,75,,\n"
    data = json.loads(get_format("json").tables([first, second]))
    assert data == {"title": "", "columns": ["model", "acc (%)", "acc ci_low (%)", "acc ci_high (%)"],
                    "rows": [{"model": "a", "acc (%)": 25.0, "acc ci_low (%)": 12.5, "acc ci_high (%)": 50.0},
                             {"model": "b", "acc (%)": 75.0, "acc ci_low (%)": None, "acc ci_high (%)": None}],
                    "notes": ["note a", "note b"]}


def test_json_keeps_title_column_order_numbers_and_notes() -> None:
    text = render_table(numbers_table(["n1"]), "json")
    assert text.endswith("}\n")
    data = json.loads(text)
    assert data["title"] == "T" and data["notes"] == ["n1"]
    assert data["columns"] == CSV_HEADER.split(",")
    assert data["rows"][0] == {"model": "=cmd", "acc (%)": 87.5, "acc ci_low (%)": 50.0, "acc ci_high (%)": 96.875,
                               "n": 10, "score": pytest.approx(1 / 3)}
    assert data["rows"][1]["acc (%)"] is None and data["rows"][1]["score"] is None
    assert data["rows"][3] == {"model": "inf", "acc (%)": None, "acc ci_low (%)": None, "acc ci_high (%)": 25.0,
                               "n": True, "score": None}


LATEX_TABLE = Table(["a_b", "x%", "c"], [
    [Cell("r&1"), Cell(0.5, (0.25, 0.75), True, "%"), Cell("~^")],
    [Cell("$5 #2"), Cell(None, None, True), Cell("{a}\\b")],
    [Cell("n"), Cell(NAN, (0.1, 0.2), True), Cell("< > |")],
    [Cell("m"), Cell(0.125, (0.0625, NAN), True), Cell("1 ≥ 0 – 2 — 3")],
], ["50% of a_b: 3 ≤ 4 × 2 − 1"])


def test_latex_is_exact_booktabs_with_every_special_character_escaped() -> None:
    assert render_table(LATEX_TABLE, "latex").splitlines() == [
        r"\begin{tabular}{lrl}",
        r"\toprule",
        r"a\_b & x\% & c \\",
        r"\midrule",
        r"r\&1 & 50.0\,{\scriptsize[25.0, 75.0]}\% & \textasciitilde{}\textasciicircum{} \\",
        r"\$5 \#2 & --- & \{a\}\textbackslash{}b \\",  # a missing accuracy is an em dash
        r"n & --- & \textless{} \textgreater{} \textbar{} \\",
        r"m & 12.5 & 1 $\geq$ 0 -- 2 --- 3 \\",  # an interval with a NaN bound is left out
        r"\bottomrule",
        r"\end{tabular}",
        r"\begin{itemize}",
        r"\item 50\% of a\_b: 3 $\leq$ 4 $\times$ 2 $-$ 1",
        r"\end{itemize}",
    ]


def test_latex_column_spec_and_no_empty_itemize() -> None:
    one = Table(["only"], [[Cell("x")]])
    assert render_table(one, "latex") == "\\begin{tabular}{l}\n\\toprule\nonly \\\\\n\\midrule\nx \\\\\n" \
                                         "\\bottomrule\n\\end{tabular}\n"
    two = Table(["a", "b"], [[Cell("x"), Cell(1)]])
    assert render_table(two, "latex").splitlines()[0] == r"\begin{tabular}{ll}"
    five = Table(list("abcde"), [[Cell(i) for i in range(5)]])
    assert render_table(five, "latex").splitlines()[0] == r"\begin{tabular}{lrrrl}"


def test_latex_text_that_starts_with_a_bracket_or_star_stays_text() -> None:
    """``\\item [x]``, ``\\toprule [x]``, ``\\midrule [x]`` and ``\\\\ [x]`` read ``[x]`` as an optional argument
    (an item label, a rule width, a row gap) and ``\\\\ *`` as the starred row end: a note ``[partial] = ...`` lost
    its brackets and bullet, a label ``[x]`` broke the table, a label ``*x`` lost its star."""
    table = Table(["[h]", "n"], [[Cell("[a] b"), Cell(1)], [Cell(" [c]"), Cell(2)], [Cell("*x"), Cell(3)],
                                 [Cell("d [e]"), Cell(4)]], [PARTIAL_NOTE, "plain"])
    lines = render_table(table, "latex").splitlines()
    assert lines[2] == r"{}[h] & n \\"
    assert lines[4:8] == [r"{}[a] b & 1 \\", r"{} [c] & 2 \\", r"{}*x & 3 \\", r"d [e] & 4 \\"]
    assert lines[-3].startswith(r"\item {}[partial] = unfinished evaluation") and lines[-2] == r"\item plain"
    matrices = build_matrices(grid_records(), notes=["[note] x"])
    assert r"\item {}[note] x" in render_matrices(matrices, "latex").splitlines()


def test_latex_matrices_escape_title_and_legend() -> None:
    matrices = build_matrices(grid_records(), title="run_1 50%", notes=["cell_x failed"])
    tex = render_matrices(matrices, "latex")
    assert tex.startswith("\\begin{itemize}\n") and r"\item cell\_x failed" in tex
    paragraphs = [line for line in tex.splitlines() if line.startswith(r"\paragraph{")]
    assert len(paragraphs) == len(matrices) and all(p.startswith(r"\paragraph{run\_1 50\%: ") for p in paragraphs)
    assert tex.count(r"\begin{tabular}{lrr}") == len(matrices)  # k/N label, then two sparsity columns


MD_TABLE = Table(["a|b", "c"], [[Cell("x|y\nz"), Cell(0.5, (0.25, 0.75), True)], [Cell(None), Cell(NAN)]],
                 ["n1\nn2", "n3"], title="T1\nT2")


def test_markdown_is_exact_with_pipes_escaped_and_breaks_as_spaces() -> None:
    assert render_table(MD_TABLE, "wide") == (
        "### T1 T2\n\n| a\\|b | c |\n|---|---|\n| x\\|y z | 50.0 (25.0–75.0) |\n| — | — |\n\n- n1 n2\n- n3\n")
    untitled = Table(["a"], [[Cell(1)]])
    assert render_table(untitled, "wide") == "| a |\n|---|\n| 1 |\n"


def test_several_tables_are_separated_by_one_blank_line() -> None:
    tables = [Table(["a"], [[Cell(1)]]), Table(["a"], [[Cell(2)]])]
    assert get_format("wide").tables(tables) == "| a |\n|---|\n| 1 |\n\n| a |\n|---|\n| 2 |\n"


def test_markdown_matrices_print_the_legend_once_before_the_tables() -> None:
    matrices = build_matrices(grid_records(), title="demo", notes=["legend line x"])
    wide = render_matrices(matrices, "wide")
    assert wide.count("- legend line x") == 1 and wide.index("- legend line x") < wide.index("### demo")
    assert wide.startswith("- ")
    md = render_matrices(matrices, "md")
    assert md.count("legend line x") == 1 and md.index("legend line x") < md.index("demo:")


def test_terminal_matrices_keep_the_width_asked_for() -> None:
    matrices = build_matrices(grid_records(), title="demo", notes=["word " * 30])
    narrow = terminal_matrices(matrices, width=50)
    assert max(len(line) for line in narrow.splitlines()) <= 50
    assert max(len(line) for line in terminal_matrices(matrices).splitlines()) > 50


def two_records():
    kwta = make_record([make_result("pgd", [1, 1, 0, 0], eps=0.1)], label="kwta")
    relu = make_record([make_result("pgd", [1, 0, 0, 0], eps=0.1)], label="relu")
    return [kwta, relu]


@pytest.mark.parametrize("fmt", ["md", "wide", "latex", "csv"])
def test_printed_records_carry_the_title_and_the_extra_notes_first(fmt: str) -> None:
    text = render_stdout(two_records(), fmt, title="My title", extra_notes=["EXTRA NOTE"])
    if fmt != "csv":  # csv leaves the notes and title out; LaTeX puts the title in a \paragraph
        assert "EXTRA NOTE" in text and "My title" in text
    if fmt == "wide":
        notes = [line for line in text.split("McNemar")[0].splitlines() if line.startswith("- ")]
        assert notes[0] == "- EXTRA NOTE"
    if fmt == "csv":
        assert "EXTRA NOTE" not in text and "My title" not in text


def test_json_printed_records_put_extra_notes_first() -> None:
    data = json.loads(render_stdout(two_records(), "json", title="My title", extra_notes=["EXTRA NOTE"]))
    assert data["title"] == "My title" and data["notes"][0] == "EXTRA NOTE"


def test_detail_prints_a_table_per_record_and_the_paired_table_follows_the_wide_one() -> None:
    records = two_records()
    wide = render_stdout(records, "wide")
    assert wide.index("| model |") < wide.index("McNemar")
    detail = render_stdout(records, "wide", detail=True)
    assert "McNemar" not in detail and [line[:4] for line in detail.splitlines()].count("|---") == 2
    csv_rows = list(csv.DictReader(io.StringIO(render_stdout(records, "csv", detail=True))))
    assert [r["model"] for r in csv_rows] == ["kwta"] * 3 + ["relu"] * 3  # clean, pgd, worst case each
    assert [r["attack"] for r in csv_rows][:3] == ["clean", "pgd", "worst case"]


def test_empty_inputs_and_bad_names_are_one_line_errors() -> None:
    for layout in ("wide", "long"):  # the long layout renders no table that would say it
        with pytest.raises(ConfigError, match=r"^table: no records given$"):
            render_records([], "md", layout)
    for detail in (False, True):
        with pytest.raises(ConfigError, match=r"^table: no records given$"):
            render_stdout([], "wide", detail=detail)
    with pytest.raises(ConfigError, match=r"^table --matrix: no matrices to render$"):
        render_matrices([], "wide")
    with pytest.raises(ConfigError, match=r"^--layout: unknown layout 'tall'; known layouts: wide, long$"):
        render_records(two_records(), "md", "tall")
    with pytest.raises(ConfigError, match="--matrix-format"):
        get_format("html", field="--matrix-format")


def test_matrices_of_records_carry_the_title() -> None:
    assert "### run7: pgd robust accuracy" in render_records_as_matrices(grid_records(), "wide", title="run7")


def test_format_help_lists_every_format_with_its_summary_in_name_order() -> None:
    text = format_help("formats: ")
    assert text.startswith("formats: csv (comma-separated values, every number in its own column); ")
    names = ["csv", "json", "latex", "md", "wide"]
    assert [text.index(f"{n} (") for n in names] == sorted(text.index(f"{n} (") for n in names)
    assert "latex (booktabs LaTeX tables)" in text and "wide (one Markdown table, a row per record)" in text


def test_the_files_a_sweep_writes_matrices_to() -> None:
    files = {name: FORMATS.get(name).matrices_file for name in ("md", "wide", "csv", "latex", "json")}
    assert files == {"md": None, "wide": "matrices.md", "csv": "matrices.csv", "latex": "matrices.tex", "json": None}
