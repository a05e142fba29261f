"""The ``md`` format's ``### title`` keeps the title's text on the heading's line. ``###`` was a word of the wrapped
text, so a first word of 117 to 120 characters (a long label without spaces) moved to the next line and left an
empty ``###`` heading; a title of leading spaces did the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.narrow import terminal_markdown
from kwta_robust.results import save_record


@pytest.mark.parametrize("title", ["w" * 117, "w" * 120, "w" * 200, " " * 200 + "spaced", "a " * 100,
                                   "w" * 118 + " tail"])
def test_heading_line_holds_text(title: str) -> None:
    lines = terminal_markdown([], title=title).splitlines()
    assert lines[0].startswith("### ") and lines[0][4:].strip() != "", lines
    assert max(map(len, lines)) <= 120
    assert re.sub(r"\s", "", "".join(lines)) == "###" + re.sub(r"\s", "", title)  # every character, in order


def test_long_word_is_cut_at_the_line_end() -> None:
    """What cuts the word is ``narrow._MarkdownWrapper._handle_long_word``, which cuts at the line's end (or a few
    characters before, to keep an escape whole) whatever ``break_long_words`` says: the heading line is never over
    the width, and carries the title's first 116 characters."""
    assert terminal_markdown([], title="w" * 200).splitlines() == ["### " + "w" * 116, "w" * 84]  # 120 - 4 = 116
    assert terminal_markdown([], title="  short title  ") == "### short title\n"


def test_blank_title_gives_no_heading() -> None:
    assert terminal_markdown([], title="   ") == ""


@pytest.mark.parametrize("label", ["w" * 200, "w" * 118, "w " * 100])
def test_table_md_of_a_long_label(tmp_path: Path, capsys: pytest.CaptureFixture, label: str) -> None:
    path = tmp_path / "r.json"
    save_record(make_record([make_result("pgd", [1, 0, 1, 0], eps=0.1)], label=label), path)
    assert main(["table", str(path), "--format", "md", "--layout", "long"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.strip() == "###"] == []
    assert lines[0].startswith("### w") and max(map(len, lines)) <= 120
