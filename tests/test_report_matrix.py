"""``report --matrix RECORD...``: the robustness matrices of one's own models (placed with ``evaluate --grid-cell``)
in the HTML report, with heatmaps, as ``report --sweep`` shows a sweep's. Before (persona walk 2), ``table --matrix``
printed them but no report could hold them: ``report`` of the records showed them side by side only, and
``report --sweep`` of their folder said "no complete cell record"."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.matrix import parse_grid_cell
from kwta_robust.results import save_record


def _declared(folder: Path, name: str, cell: str, flags: list[int]) -> str:
    record = make_record([make_result("pgd", flags)], label=name)
    record.model["grid_cell"] = parse_grid_cell(cell)
    save_record(record, folder / f"{name}.json")
    return str(folder / f"{name}.json")


def test_report_matrix_shows_the_declared_cells_matrices(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = [_declared(tmp_path, "mine-0.1", "kwta_ratio=0.1,weight_sparsity=0", [1, 0, 0, 0]),
             _declared(tmp_path, "mine-relu", "kwta_ratio=1,weight_sparsity=0", [1, 1, 1, 0])]
    assert main(["report", "--matrix", *paths, "--out", str(tmp_path / "grid.html")]) == 0
    page = (tmp_path / "grid.html").read_text(encoding="utf-8")
    assert "<h2>Robustness matrices</h2>" in page and "declared with evaluate --grid-cell (every cell)" in page
    assert "worst case robust accuracy at Linf 0.3" in page  # the worst-case matrix, its heatmap titled
    assert main(["report", "--matrix", *paths, "--out", str(tmp_path / "grid.md")]) == 0
    text = (tmp_path / "grid.md").read_text(encoding="utf-8")
    assert "### worst case robust accuracy at Linf 0.3 (no pruning, n=4)" in text  # titled as table --matrix titles it
    assert "| 1.0 (ReLU twin) | 75.0 (30.0–95.5) |" in text and "| 0.1 | 25.0 (4.5–70.0) |" in text
    capsys.readouterr()
    assert main(["report", "--matrix", "--sweep", str(tmp_path), "--out", str(tmp_path / "x.html")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --matrix: give the RECORD.json files to place in the matrices, without --sweep (a sweep's report "
        "holds its matrices already)")
