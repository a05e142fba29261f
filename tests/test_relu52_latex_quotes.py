"""LaTeX text mode sets a straight quote as a closing quote: the cascade table's note ``'+' columns`` came out as
’+’, a label quoted in a note (``'relu'``) and JSON's ``"steps"`` alike. The LaTeX writer now writes an opening
quote as LaTeX's (a backquote; two for ``"``) and a closing ``"`` as two apostrophes; an apostrophe stays."""

from __future__ import annotations

from kwta_robust.formats import render_stdout
from kwta_robust.formats.latex import latex_escape
from tests.eval_helpers import make_record, make_result


def test_the_cascade_note_quotes_the_plus_as_latex_wants() -> None:
    plus = make_result("pgd+", [1, 0, 0, 1], cumulative=True, position=1)  # a cascade column
    record = make_record([make_result("pgd", [1, 0, 1, 1]), plus], label="kwta")
    text = render_stdout([record], "latex")
    notes = [line for line in text.splitlines() if "columns (cascade mode)" in line]
    assert notes == [r"\item `+' columns (cascade mode): robust accuracy after that attack and every attack left of "
                     "it at the same epsilon."]
    assert "'+'" not in text
    assert "'+'" in render_stdout([record], "md")  # Markdown keeps its straight quotes


def test_straight_quotes_open_and_close_as_latex_sets_them() -> None:
    assert latex_escape("model.activation: 'none' != 'relu (detected)'") == \
        "model.activation: `none' != `relu (detected)'"
    assert latex_escape('params {"steps": 10}') == r"params \{``steps'': 10\}"
    assert latex_escape("--grid-cell 'kwta=0.25' (the model's cell)") == "--grid-cell `kwta=0.25' (the model's cell)"
    assert latex_escape("'quoted' at the start, a lone ' and a closing quote'") == \
        "`quoted' at the start, a lone ' and a closing quote'"
