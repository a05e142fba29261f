"""A sweep's plots draw text from its records and config as it is: a ``$`` pair in an attack's label or a sweep's
name is not read as matplotlib mathtext (``pgd $\\sqrt$`` stopped write_plots with a ValueError)."""

from __future__ import annotations

from pathlib import Path

from kwta_robust.matrix import CLEAN, WORST, build_matrices
from kwta_robust.plots import heatmap_figure, write_plots
from test_matrix import grid_records

LABEL = r"pgd $\sqrt$ at $x"


def test_dollar_signs_in_labels_and_titles_are_drawn_as_written(tmp_path: Path) -> None:
    records = grid_records()
    for record in records:
        for result in record.results:
            result.label = LABEL if result.label == "pgd" else result.label
            result.eps_text = f"${result.eps_text}$"
    matrices = build_matrices(records, title=r"sweep $\frac$")
    paths = write_plots(matrices, tmp_path / "plots")
    assert len(paths) == len(set(paths)) > len([m for m in matrices if m.metric in (CLEAN, WORST)])
    pgd = next(m for m in matrices if m.metric == LABEL)
    title = heatmap_figure(pgd).axes[0].get_title()
    assert r"sweep $\frac$" in title and LABEL in title
