"""``table --matrix``'s per-level noise matrices (audit 49): the 10 matrices of the quickstart's 11 numenta levels
each added a ~400-character legend line that differed in the level alone. They now share one line, printed once; the
matrix's title names its level, and a matrix rendered alone still carries the note."""

from __future__ import annotations

from html_helpers import quickstart_records
from kwta_robust.formats import render_records_as_matrices
from kwta_robust.matrix import build_matrices, legend, matrix_table


def test_the_per_level_matrices_share_one_legend_line() -> None:
    matrices = build_matrices(quickstart_records(), noise_levels=True)
    levels = [m for m in matrices if m.metric.startswith("noise numenta level ")]
    assert [m.metric for m in levels] == [f"noise numenta level {v:g}" for v in
                                          (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)]
    lines = [n for n in legend(matrices) if n.startswith("noise numenta level")]
    assert len(lines) == 1 and lines[0].startswith("noise numenta level L (a matrix per level of the probe but 0")
    assert all(lines[0] in matrix_table(m).notes for m in levels)  # alone, each matrix keeps it
    assert "noise numenta level 0.3 accuracy (no pruning, n=200)" in [m.title for m in levels]
    text = render_records_as_matrices(quickstart_records(), "md")
    assert text.count("- noise numenta level") == 1 and text.count("### noise numenta level") == 10
