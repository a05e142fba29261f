"""Sweeps run end to end on odd but valid inputs (the fuzz round of sweeps at run time): what sits in the sweep's
folder where an output goes is one ``error:`` line before any cell runs (was a traceback, for the matrices and the
report after every cell was computed), and a file where one cell's folder goes fails that cell in one line while the
others are computed, kept and shown, and is not retrained next to them on the next run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import kwta_robust.sweep.cells as cells
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.results import load_record
from kwta_robust.sweep import SweepConfig, plan_cells, run_sweep
from test_sweep import count_work, tiny_config, write_config

ONE_CELL = {"kwta_ratios": [1.0], "weight_sparsities": [0.0], "pruning_methods": ["magnitude"]}
TWO_CELLS = {"kwta_ratios": [1.0, 0.25], "weight_sparsities": [0.0], "pruning_methods": ["magnitude"]}


def small_config(grid: dict) -> dict:
    """The tiny sweep of test_sweep on ``grid``, one training epoch, 8 samples and one 2-step PGD."""
    data = tiny_config(grid=grid)
    data["train"]["epochs"] = 1
    data["eval"].update(n_examples=8, batch_size=8, noise=[], attacks=[{"attack": "pgd", "params": {"steps": 2}}])
    return data


def no_training(monkeypatch) -> None:
    def refuse(cfg):
        raise AssertionError("a cell trained although the sweep's folder was refused")

    monkeypatch.setattr(cells, "run_training", refuse)


# what is in the way, made in the sweep folder -> the path named and the words of the error
IN_THE_WAY = [
    ("sweep.json", "folder", "is a folder, where the sweep writes its sweep.json; move it away"),
    ("matrices.md", "folder", "is a folder, where the sweep writes its matrices.md; move it away"),
    ("matrices.csv", "folder", "is a folder, where the sweep writes its matrices.csv; move it away"),
    ("matrices.tex", "folder", "is a folder, where the sweep writes its matrices.tex; move it away"),
    ("report.html", "folder", "is a folder, where the sweep writes its report.html; move it away"),
    ("plots", "file", "is a file, where the sweep keeps its plots/ folder; move it away"),
    ("cells", "file", "is a file, where the sweep keeps its cells/ folder; move it away"),
]


@pytest.mark.parametrize("name,kind,message", IN_THE_WAY, ids=[n for n, _, _ in IN_THE_WAY])
def test_an_output_path_taken_by_the_other_kind_is_one_line_before_any_cell(name, kind, message, tmp_path,
                                                                             monkeypatch, capsys) -> None:
    config = write_config(tmp_path / "s.yaml", small_config(ONE_CELL))
    out = tmp_path / "out"
    out.mkdir()
    if kind == "folder":
        (out / name).mkdir()
    else:
        (out / name).write_text("mine\n")
    no_training(monkeypatch)
    code = main(["sweep", str(config), "--out-dir", str(out), "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("INFO", "WARNING"))]
    assert code == 2 and "Traceback" not in err and len(lines) == 1
    assert lines[0] == f"error: --out-dir: {out / name} {message} or use another --out-dir"
    assert (out / name).is_dir() == (kind == "folder")  # what was there is untouched
    if kind == "file":
        assert (out / name).read_text() == "mine\n"
    assert not (out / "sweep.json").is_file()  # nothing started: no manifest written


def test_the_python_api_refuses_a_folder_where_the_manifest_goes(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    (out / "sweep.json").mkdir(parents=True)
    no_training(monkeypatch)
    with pytest.raises(ConfigError, match=r"^--out-dir: .*sweep\.json is a folder, where the sweep writes its "
                                          r"sweep\.json; move it away or use another --out-dir$"):
        run_sweep(SweepConfig.from_dict(small_config(ONE_CELL)), out, progress=False)


def test_a_plots_file_is_left_alone_with_no_plots(tmp_path, capsys) -> None:
    config = write_config(tmp_path / "s.yaml", small_config(ONE_CELL))
    out = tmp_path / "out"
    out.mkdir()
    (out / "plots").write_text("mine\n")
    assert main(["sweep", str(config), "--out-dir", str(out), "--no-progress", "--no-plots"]) == 0
    assert (out / "plots").read_text() == "mine\n"
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["status"] == "complete" and [c["status"] for c in manifest["cells"]] == ["done"]


def test_a_file_where_one_cell_goes_fails_that_cell_in_one_line_and_keeps_the_others(tmp_path, monkeypatch, capsys,
                                                                                   caplog) -> None:
    data = small_config(TWO_CELLS)
    config = write_config(tmp_path / "s.yaml", data)
    out = tmp_path / "out"
    relu, kwta = plan_cells(SweepConfig.from_dict(data), out)
    assert (relu.label, kwta.label) == ("relu-dense", "kwta0.25-dense")
    Path(kwta.directory).parent.mkdir(parents=True)
    Path(kwta.directory).write_text("not a folder\n")
    caplog.set_level(logging.INFO)
    assert main(["sweep", str(config), "--out-dir", str(out), "--no-progress", "--no-plots"]) == 1
    captured = capsys.readouterr()
    expected = (f"--out-dir: {kwta.directory} is a file, where the sweep keeps this cell's checkpoint "
                "and record; move it away and run the sweep again")
    assert "Traceback" not in captured.err + caplog.text  # was FileExistsError's traceback in the log
    assert f"  kwta0.25-dense ({kwta.directory}): {expected}" in captured.err.splitlines()
    manifest = json.loads((out / "sweep.json").read_text())
    status = {c["label"]: (c["status"], c["error"]) for c in manifest["cells"]}
    assert status == {"relu-dense": ("done", None), "kwta0.25-dense": ("failed", expected)}
    assert manifest["status"] == "failed" and manifest["failed"] == [kwta.cell_id]
    kept = load_record(relu.record_path)  # the other cell is computed, kept and shown, the hole named
    assert kept.status == "complete" and kept.model["sweep_cell"]["cell_id"] == relu.cell_id
    md = (out / "matrices.md").read_text()
    assert "failed cell (no record, retried on the next run): kwta0.25-dense" in md
    assert "| 1.0 (ReLU twin) " in md
    assert "kwta0.25-dense" in (out / "report.html").read_text()  # the report names the failed cell too
    assert Path(kwta.directory).read_text() == "not a folder\n"  # the file in the way is untouched

    Path(kwta.directory).unlink()  # moved away: the next run does that cell alone
    before = Path(relu.record_path).read_text()
    train, evaluate = count_work(monkeypatch)
    assert main(["sweep", str(config), "--out-dir", str(out), "--no-progress", "--no-plots"]) == 0
    assert train.calls == [Path(kwta.directory).name] and evaluate.calls == [kwta.directory]
    assert Path(relu.record_path).read_text() == before
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["status"] == "complete" and manifest["failed"] == []
    assert "failed cell" not in (out / "matrices.md").read_text()


# a hand edit of a finished cell's record -> its model.sweep_cell, out of the grid's ranges
BAD_CELLS = [
    ({"kwta_ratio": float("nan")}, "kwta_ratio nan is outside (0, 1]"),
    ({"kwta_ratio": float("inf")}, "kwta_ratio inf is outside (0, 1]"),
    ({"kwta_ratio": 0.0}, "kwta_ratio 0 is outside (0, 1]"),
    ({"kwta_ratio": 2.5}, "kwta_ratio 2.5 is outside (0, 1]"),
    ({"weight_sparsity": -0.5}, "weight_sparsity -0.5 is outside [0, 1)"),
    ({"weight_sparsity": 1.0}, "weight_sparsity 1 is outside [0, 1)"),
    ({"weight_sparsity": float("nan")}, "weight_sparsity nan is outside [0, 1)"),
]


@pytest.fixture(scope="module")
def one_cell_sweep(tmp_path_factory):
    """A finished one-cell sweep (a kWTA row) through the CLI: its folder and the cell's record path."""
    out = tmp_path_factory.mktemp("one")
    data = small_config({"kwta_ratios": [0.25], "weight_sparsities": [0.0], "pruning_methods": ["magnitude"]})
    config = write_config(out / "s.yaml", data)
    assert main(["sweep", str(config), "--out-dir", str(out / "sweep"), "--no-progress", "--no-plots"]) == 0
    (plan,) = plan_cells(SweepConfig.from_dict(data), out / "sweep")
    return out / "sweep", Path(plan.record_path)


@pytest.mark.parametrize("edit,message", BAD_CELLS, ids=[m for _, m in BAD_CELLS])
def test_a_sweep_cell_outside_the_grid_ranges_is_refused_not_placed(edit, message, one_cell_sweep, tmp_path,
                                                                    capsys) -> None:
    folder, record_path = one_cell_sweep
    data = json.loads(record_path.read_text())
    data["model"]["sweep_cell"].update(edit)  # was a row or column 'nan', 'inf', '2.5', '-0.5' in the matrix
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["table", str(edited), "--matrix"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.strip() == (f"error: table --matrix: record 'kwta0.25-dense': model.sweep_cell is malformed "
                                    f"(ValueError: {message}); it needs kwta_ratio, weight_sparsity (numbers) and "
                                    "pruning_method")


def test_the_unedited_cell_record_sits_in_its_row(one_cell_sweep, capsys) -> None:
    _, record_path = one_cell_sweep
    capsys.readouterr()
    assert main(["table", str(record_path), "--matrix"]) == 0
    assert "| 0.25 " in capsys.readouterr().out


def test_a_dry_run_refuses_what_the_run_would(tmp_path, monkeypatch, capsys) -> None:
    config = write_config(tmp_path / "s.yaml", small_config(ONE_CELL))
    out = tmp_path / "out"
    (out / "matrices.md").mkdir(parents=True)
    no_training(monkeypatch)
    assert main(["sweep", str(config), "--out-dir", str(out), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == (
        f"error: --out-dir: {out / 'matrices.md'} is a folder, where the sweep writes its matrices.md; move it away "
        "or use another --out-dir")
