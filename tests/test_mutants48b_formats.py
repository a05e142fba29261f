"""Session 48's second mutation review: LaTeX's noise-score branch keeps a matrix cell's mark (``*``: not
comparable with the other cells) after the interval, as an accuracy cell does."""

from __future__ import annotations

from kwta_robust.formats import render_table
from kwta_robust.matrix import MARK
from kwta_robust.report import Cell, Table


def test_a_marked_noise_score_with_its_interval_keeps_its_mark_in_latex() -> None:
    table = Table(["cell", "noise score"], [[Cell("r0.1"), Cell(1539.0, (1467.3, 1610.7), False, MARK)],
                                            [Cell("r1"), Cell(0.7, (0.65, 0.75), True, MARK)]])
    latex = render_table(table, "latex")
    assert rf"1539\,{{\scriptsize[1467, 1611]}}{MARK}" in latex
    assert rf"70.0\,{{\scriptsize[65.0, 75.0]}}{MARK}" in latex
