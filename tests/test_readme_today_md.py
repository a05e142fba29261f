"""README (``table --out``): Markdown outputs put a backslash before a character "only where they would" render.
Two rules escaped more: ``]:`` anywhere in a text (a reference definition forms only where a block starts), so the
protocol note's ``[a, b]: a list`` printed as ``\\[a, b\\]`` by ``table --protocol`` and ``--dry-run``; and a list
item or heading starting ``2.5``, ``-62.0`` or ``#5`` (no list marker or heading: those need a space after them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.md_text import md_escape
from kwta_robust.results import save_record


@pytest.mark.parametrize(("text", "escaped"), [
    ("inner attacks after ';', [a, b]: a list", "inner attacks after ';', [a, b]: a list"),
    ("2.5*eps/steps per step", "2.5*eps/steps per step"), ("-62.0 margin", "-62.0 margin"),
    ("#5 of the grid", "#5 of the grid"), ("+fgsm broke 3", "+fgsm broke 3"),
    # still escaped: a definition where the item starts, a list marker or heading followed by a space, a rule
    ("[d]: http://u", "\\[d\\]: http://u"), ("2. x", "2\\. x"), ("- x", "\\- x"), ("## x", "\\## x"),
    ("---", "\\---"), ("> q", "\\> q")])
def test_a_list_item_escapes_only_what_would_render(text: str, escaped: str) -> None:
    assert md_escape(text, block_start=True) == escaped


def test_a_reference_definition_cannot_form_inside_a_table_cell_or_mid_text() -> None:
    assert md_escape("see [a, b]: a list") == "see [a, b]: a list"
    assert md_escape("[r][1] and [d]: u") == "\\[r\\]\\[1\\] and \\[d\\]: u"  # a full reference link: escaped


def test_the_protocol_note_prints_as_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "r.json"
    save_record(make_record([make_result("pgd", [1, 0, 1, 0], eps=0.1)]), path)
    assert main(["table", "--protocol", str(path)]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the note wrapped to the terminal, joined again
    assert "a/b/c: one value per BPDA temperature stage, [a, b]: a list);" in text
    assert "\\[" not in text
