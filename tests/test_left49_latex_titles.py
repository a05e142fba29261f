"""LaTeX tables carry the titles Markdown shows, as a ``\\paragraph`` before the ``tabular`` (as the LaTeX matrices
always had theirs): the paired comparison's and the protocol's (``kwta-robust table --format latex``, ``table
--protocol --format latex``), a record's in the long layout, a command's title. Before, every table but a matrix lost
its title in LaTeX. (The HTML report shows the paired comparison under its section heading and a record's protocol
under its label; CSV keeps one header row and no title by design.)"""

from __future__ import annotations

import re

from eval_helpers import make_record, make_result
from kwta_robust.formats import render_stdout, render_table
from kwta_robust.protocol import render_protocol
from kwta_robust.report import Cell, Table


def _records():
    kwta = make_record([make_result("pgd", [1, 1, 0, 0], eps=0.1)], label="kwta")
    relu = make_record([make_result("pgd", [1, 0, 0, 0], eps=0.1)], label="relu")
    return [kwta, relu]


def _paragraphs(tex: str) -> list[str]:
    return re.findall(r"^\\paragraph\{(.*)\}$", tex, flags=re.MULTILINE)


def test_the_paired_comparison_has_its_title_before_its_tabular() -> None:
    lines = render_stdout(_records(), "latex").splitlines()
    at = lines.index(r"\paragraph{Paired comparison}")
    assert lines[at + 1].startswith(r"\begin{tabular}") and lines[at + 3].startswith("models & accuracy")
    assert _paragraphs("\n".join(lines)) == ["Paired comparison"]  # the wide table has no title here


def test_the_protocol_has_its_title() -> None:
    tex = render_protocol(_records(), "latex")
    assert tex.startswith("\\paragraph{Attack protocol}\n\\begin{tabular}")
    assert render_protocol(_records(), "latex", title="").startswith("\\begin{tabular}")  # no title: no paragraph


def test_latex_titles_are_the_markdown_ones() -> None:
    records = _records()
    for detail in (False, True):
        wide = render_stdout(records, "wide", detail=detail, title="My 50% title")
        md_titles = [line[4:] for line in wide.splitlines() if line.startswith("### ")]
        tex = render_stdout(records, "latex", detail=detail, title="My 50% title")
        assert [t.replace(r"\%", "%") for t in _paragraphs(tex)] == md_titles and md_titles, (detail, md_titles)


def test_a_titled_table_is_its_untitled_latex_under_an_escaped_paragraph() -> None:
    rows = [[Cell("a_b"), Cell(0.5, (0.25, 0.75), True)]]
    untitled = render_table(Table(["model", "acc"], rows, ["a note"]), "latex")
    titled = render_table(Table(["model", "acc"], rows, ["a note"], title="run_1\n50% & more"), "latex")
    assert titled == "\\paragraph{run\\_1 50\\% \\& more}\n" + untitled

