"""``kwta-robust sweep`` placed its records in matrices as ``table --matrix`` does, and its errors said so:
``table --matrix: records 'a' and 'b' both sit at ...`` (its matrices) or ``report --sweep: ...`` (its report.html)
for commands the user had not run, and told them to leave a record "out of --matrix", an option ``sweep`` lacks.
Each now names ``sweep``. The sweep's run is replaced by one returning the records (no training: seconds)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import kwta_robust.sweep as sweep_package
from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.formats import render_matrices
from kwta_robust.matrix import parse_grid_cell
from kwta_robust.results import EvalRecord, save_record
from test_sweep_fuzz import ONE_CELL, small_config
from test_sweep import write_config


def _declared(name: str, cell: str = "kwta_ratio=0.1,weight_sparsity=0") -> EvalRecord:
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label=name)
    record.model["grid_cell"] = parse_grid_cell(cell)
    return record


def _sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
           records: list[EvalRecord]) -> str:
    """``sweep`` of a one-cell config whose run gives ``records``: its last line on stderr (exit status 2)."""
    result = SimpleNamespace(failed=[], records=lambda: list(records), plans=[], outcomes={})
    monkeypatch.setattr(sweep_package, "run_sweep", lambda cfg, out_dir, progress: result)
    config = write_config(tmp_path / "s.yaml", small_config(ONE_CELL))
    capsys.readouterr()
    assert main(["sweep", str(config), "--out-dir", str(tmp_path / "out"), "--no-progress", "--no-plots"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return captured.err.strip().splitlines()[-1]


def test_two_records_in_one_cell_name_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    assert _sweep(tmp_path, monkeypatch, capsys, [_declared("a"), _declared("b")]) == (
        "error: sweep: records 'a' and 'b' both sit at k/N=0.1, weight sparsity 0 (none); pass one record per cell")


def test_a_kwta_record_at_ratio_one_is_left_out_of_the_sweeps_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label="k1")
    record.model["kwta_ratio"] = 1.0  # a kWTA model keeping every unit: no matrix row
    err = _sweep(tmp_path, monkeypatch, capsys, [record])
    assert err.startswith("error: sweep: record 'k1' is a kWTA model at k/N 1.0")
    assert err.endswith("so leave this record out of the sweep's folder")


def test_the_sweeps_report_names_sweep_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    cells = tmp_path / "out" / "cells"  # no manifest: the report reads every cells/*/eval-*.json
    for name in ("a", "b"):
        (cells / name).mkdir(parents=True)
        save_record(_declared(name), cells / name / "eval-1.json")
    assert _sweep(tmp_path, monkeypatch, capsys, [_declared("a")]) == (
        "error: sweep: records 'a' and 'b' both sit at k/N=0.1, weight sparsity 0 (none); pass one record per cell")
    assert (tmp_path / "out" / "matrices.md").is_file()  # the matrices of the run's own record were written


def test_render_matrices_names_the_command_given() -> None:
    with pytest.raises(ConfigError, match=r"^sweep: no matrices to render$"):
        render_matrices([], "md", command="sweep")
    with pytest.raises(ConfigError, match=r"^table --matrix: no matrices to render$"):
        render_matrices([], "md")
