"""What a sweep writes from its records: the robustness matrices in every format that has a matrices file
(``matrices.md``, ``matrices.csv``, ``matrices.tex``; :mod:`kwta_robust.formats`) and the heatmaps and
robust-accuracy-vs-eps plots under ``plots/`` (:mod:`kwta_robust.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kwta_robust.formats import FORMATS
from kwta_robust.matrix import build_matrices
from kwta_robust.results import EvalRecord, atomic_write_text


def write_outputs(records: Sequence[EvalRecord], out_dir: str | Path, *, title: str = "", plots: bool = True,
                  notes: Sequence[str] = ()) -> dict[str, list[Path]]:
    """The matrices (one file per format with a ``matrices_file``) and, with ``plots``, the heatmaps and
    robust-accuracy-vs-eps plots under ``plots/``. Returns the written paths by kind (``tables``, ``plots``)."""
    out_dir = Path(out_dir)
    matrices = build_matrices(records, title=title, notes=notes)
    written: dict[str, list[Path]] = {"tables": [], "plots": []}
    for entry in FORMATS.entries():
        if entry.obj.matrices_file:
            path = out_dir / entry.obj.matrices_file
            atomic_write_text(path, entry.obj().matrices(matrices))
            written["tables"].append(path)
    if plots:
        from kwta_robust.plots import write_plots  # matplotlib: loaded only when plots are drawn

        written["plots"] = write_plots(matrices, out_dir / "plots")
    return written
