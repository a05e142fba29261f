"""The matrices' texts as a researcher meets them:

* ``report --sweep DIR`` placed the sweep's records as ``table --matrix`` does and its errors said so: ``table
  --matrix: records 'a' and 'b' both sit at ...`` for a command the user had not run; each now names the command run
  (``report --matrix`` already did);
* the Markdown report of ``report --matrix`` titled every matrix with the records' folder (``### tmpab12: clean
  accuracy ...``), where ``table --matrix`` of the same records titles it by what it shows;
* the legend's Rows line said every gate keeps the units tied with the k-th largest, our layers' rule, also for a
  top-k gate of one's own (``topk`` keeps exactly k);
* a module gate the layer probe saw at two input shapes (one gate shared by layers of other widths) was named by its
  first shape's k/N alone in the matrices' errors and flags, where an inline gate showed each k/N it had.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.matrix import build_matrices, legend, parse_grid_cell
from kwta_robust.matrix_checks import gate_ratios, gates_found_text
from kwta_robust.results import save_record


def _declared(path: Path, name: str, cell: str) -> str:
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label=name)
    record.model["grid_cell"] = parse_grid_cell(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_record(record, path)
    return str(path)


@pytest.mark.parametrize("suffix", [".html", ".md"])
def test_report_sweep_errors_name_report_sweep(tmp_path: Path, capsys: pytest.CaptureFixture, suffix: str) -> None:
    sweep = tmp_path / "sweep"  # no manifest: every cells/*/eval-*.json is a cell record
    _declared(sweep / "cells" / "a" / "eval-1.json", "a", "kwta_ratio=0.1,weight_sparsity=0")
    _declared(sweep / "cells" / "b" / "eval-1.json", "b", "kwta_ratio=0.1,weight_sparsity=0")
    capsys.readouterr()
    assert main(["report", "--sweep", str(sweep), "--out", str(tmp_path / f"r{suffix}")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: report --sweep: records 'a' and 'b' both sit at k/N=0.1, weight sparsity 0 (none); pass one record "
        "per cell")
    assert not (tmp_path / f"r{suffix}").exists()


def test_a_kwta_record_at_ratio_one_in_a_sweep_folder_is_left_out_of_the_folder(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label="k1")
    record.model["kwta_ratio"] = 1.0  # a kWTA model keeping every unit: no matrix row
    (tmp_path / "sweep" / "cells" / "a").mkdir(parents=True)
    save_record(record, tmp_path / "sweep" / "cells" / "a" / "eval-1.json")
    save_record(record, tmp_path / "k1.json")
    capsys.readouterr()
    assert main(["report", "--sweep", str(tmp_path / "sweep"), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: report --sweep: record 'k1' is a kWTA model at k/N 1.0") and err.endswith(
        "so leave this record out of the sweep's folder (or pass the other records to report --matrix)")
    assert main(["report", "--matrix", str(tmp_path / "k1.json"), "--out", str(tmp_path / "m.html")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("so leave this record out of --matrix")


def test_report_matrix_markdown_titles_read_like_table_matrix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = [_declared(tmp_path / "mine" / "a.json", "a", "kwta_ratio=0.1,weight_sparsity=0"),
             _declared(tmp_path / "mine" / "b.json", "b", "kwta_ratio=1,weight_sparsity=0")]
    assert main(["table", "--matrix", *paths]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("### ")]
    assert table[:2] == ["### clean accuracy (no pruning, n=4)", "### worst case robust accuracy at Linf 0.3 "
                         "(no pruning, n=4)"]
    assert main(["report", "--matrix", *paths, "--out", str(tmp_path / "r.md")]) == 0
    titles = [line for line in (tmp_path / "r.md").read_text(encoding="utf-8").splitlines() if line.startswith("### ")]
    assert titles[0] == "### kwta-robust: mine"  # the page says where the records are; each matrix what it shows
    assert [t for t in titles if "pruning, n=" in t] == table


def test_the_rows_legend_says_ties_go_by_each_gates_own_rule() -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label="a")
    record.model["grid_cell"] = parse_grid_cell("kwta_ratio=0.1,weight_sparsity=0")
    rows = legend(build_matrices([record]))[0]
    assert rows.startswith("Rows: kWTA activation sparsity k/N (the fraction of units each top-k gate is set to keep; "
                           "ties at the k-th largest go by the gate's own rule: our kWTA layers keep every tied unit")
    assert "a gate of your own keeps what its code keeps, e.g. exactly k by topk" in rows
    assert "units tied with the k-th largest are kept too" not in rows


SHARED = {"n": 16, "probed": 3, "layers": [{"name": "gate", "module_class": "ForeignTopK", "kinds": ["gate"],
                                             "grouping": "dense", "evidence": {
                                                 "shape": [16, 12], "k": 3, "group_size": 12, "calls": 2,
                                                 "k_per_shape": [[[16, 12], 3, 12], [[16, 24], 6, 24]]}}]}


def test_a_module_gate_of_two_shapes_shows_each_k_as_an_inline_gate_does(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label="shared", detection=SHARED)
    assert gate_ratios(record) == ["gate 3/12, 6/24"]
    assert gates_found_text(record) == "layer gate (k/N 3/12, 6/24)"
    save_record(record, tmp_path / "shared.json")
    capsys.readouterr()
    assert main(["table", "--matrix", str(tmp_path / "shared.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the layer probe found top-k gates in layer gate (k/N 3/12, 6/24); " in err
    assert "--grid-cell kwta_ratio=0.25,weight_sparsity=S" in err
