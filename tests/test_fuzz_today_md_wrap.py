"""The ``md`` format's notes, legend and titles are wrapped to 120 columns (:func:`kwta_robust.narrow.wrap`); the
wrap must not turn escaped record text back into Markdown. Before, a break before ``#``, ``-``, ``>`` or ``1.``
started a continuation line with it (GitHub rendered a heading, a list or a quote inside the note: a model labelled
``... # x``), and a long word was cut between a backslash and the character it escapes (the backslash at the line's
end is a hard line break, and ``*``/``<`` on the next line were no longer escaped)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.md_text import md_escape
from kwta_robust.narrow import wrap
from kwta_robust.results import save_record

BLOCK = re.compile(r"\s*(#|>|[-+*](\s|$)|\d+[.)](\s|$)|[-=]+\s*$)")  # what starts a block at a line's start
ODD_BACKSLASH_END = re.compile(r"(?<!\\)(\\\\)*\\$")


def problems(out: str, width: int = 120) -> list[str]:
    """Lines over ``width``, lines ending in an unpaired backslash, continuation lines (indented under a list
    item's ``- ``) that start a block."""
    lines = out.splitlines()
    return ([f"wide: {line!r}" for line in lines if len(line) > width]
            + [f"backslash: {line!r}" for line in lines if ODD_BACKSLASH_END.search(line)]
            + [f"block: {line!r}" for line in lines if line.startswith(" ") and BLOCK.match(line)])


@pytest.mark.parametrize("tail", ["# h", "1. x", "- x", "> q", "==="])
@pytest.mark.parametrize("spaced", [True, False])
def test_no_wrapped_line_starts_a_block(tail: str, spaced: bool) -> None:
    for n in range(100, 125):  # every break position around the tail, for words and for one long word
        text = ("w " * (n // 2) if spaced else "w" * n) + " " + tail
        out = wrap(md_escape(text, block_start=True), 120, "- ")
        assert problems(out) == [], (n, out)
        assert re.sub(r"\s", "", out) == "-" + re.sub(r"\s", "", text)  # every character kept, in order


@pytest.mark.parametrize("tail", ["**bold** x", "`a` `b`", "<b>x", "\\\\\\*x*"])
def test_no_escape_is_cut_from_its_character(tail: str) -> None:
    for n in range(100, 125):
        escaped = md_escape("w" * n + tail, block_start=True)
        out = wrap(escaped, 120, "- ")
        assert problems(out) == [], (n, out)
        assert re.sub(r"\s", "", out) == "-" + re.sub(r"\s", "", escaped)


def test_no_line_ends_in_a_word_ending_with_a_backslash() -> None:
    for n in range(40, 62):  # "C:\\models\\" at each place around the break
        text = "w " * n + "C:\\models\\ next words here"
        out = wrap(md_escape(text, block_start=True), 120, "- ")
        assert problems(out) == [], (n, out)
        assert re.sub(r"\s", "", out) == "-" + re.sub(r"\s", "", text)


def test_plain_text_wraps_at_the_last_space_that_fits() -> None:
    text = "robust accuracy in % with 95% wilson intervals; " * 5  # 47 characters before each "robust"
    assert wrap(text, 60, "- ").splitlines()[:2] == [
        "- robust accuracy in % with 95% wilson intervals; robust",  # 56: " accuracy" would make 65
        "  accuracy in % with 95% wilson intervals; robust accuracy"]  # 58: " in" would make 61


def test_table_md_title_and_notes_of_a_label_with_a_hash(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    label = "w" * 117 + " # not a heading"  # "- " + 117 + " #" is 121 columns: the break falls before "#"
    path = tmp_path / "r.json"
    save_record(make_record([make_result("pgd", [1, 0, 1, 0], eps=0.1)], label=label), path)
    assert main(["table", str(path), "--format", "md", "--layout", "long"]) == 0
    out = capsys.readouterr().out
    headings = [line for line in out.splitlines() if re.match(r"\s*#", line)]
    assert headings == [out.splitlines()[0]]  # the title's line alone
    notes = out[out.index("\n- "):]
    assert re.sub(r"\s", "", f"{label}: toy (test)") in re.sub(r"\s", "", notes)  # (a word too long is cut)
    assert problems(notes.strip("\n")) == []
