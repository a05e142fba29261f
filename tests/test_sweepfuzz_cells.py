"""A sweep cell's record edited by hand (or copied from another cell) to other grid coordinates: ``table --matrix``
placed its numbers silently in the row or column its ``model.sweep_cell`` named, although the record's own model
(``activation``/``kwta_ratio``, ``training.pruning``) said otherwise; and a re-run of the sweep took the edited
record as the finished cell, so the sweep's own matrices showed it in the wrong cell too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kwta_robust.cli import main
from kwta_robust.results import load_record
from test_sweep import count_work
from test_sweep_fuzz import one_cell_sweep  # noqa: F401 - the fixture: a finished one-cell sweep, kWTA 0.25 dense

# (edit of model.sweep_cell, what the one line says it declares)
EDITS = [
    ({"kwta_ratio": 0.5}, "kwta_ratio=0.5, weight_sparsity=0 (none)"),
    ({"kwta_ratio": 1.0, "activation": "relu"}, "kwta_ratio=1, weight_sparsity=0 (none)"),
    ({"weight_sparsity": 0.5, "pruning_method": "magnitude"}, "kwta_ratio=0.25, weight_sparsity=0.5 (magnitude)"),
    ({"weight_sparsity": 0.5}, "kwta_ratio=0.25, weight_sparsity=0.5 (none)"),  # the sparsity alone differs
    ({"pruning_method": "magnitude"}, "kwta_ratio=0.25, weight_sparsity=0 (magnitude)"),  # the method alone
]


def edited_copy(record_path: Path, target: Path, edit: dict) -> Path:
    data = json.loads(record_path.read_text(encoding="utf-8"))
    data["model"]["sweep_cell"].update(edit)
    target.write_text(json.dumps(data), encoding="utf-8")
    return target


@pytest.mark.parametrize("edit,declared", EDITS, ids=[d for _, d in EDITS])
def test_a_cell_record_edited_to_another_cell_is_one_line_not_placed(edit, declared, one_cell_sweep, tmp_path,
                                                                     capsys) -> None:
    _, record_path = one_cell_sweep
    edited = edited_copy(record_path, tmp_path / "edited.json", edit)
    capsys.readouterr()
    assert main(["table", str(edited), "--matrix"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.strip() == (
        f"error: table --matrix: record 'kwta0.25-dense': model.sweep_cell puts it at {declared} but its model has "
        "kwta_ratio=0.25 (activation kwta), weight_sparsity=0 (none); the record was edited or copied from another "
        "cell: pass the record the sweep wrote for that cell")


def test_a_sweep_rerun_evaluates_an_edited_cell_record_again_and_keeps_it_aside(one_cell_sweep, tmp_path,
                                                                                monkeypatch, capsys) -> None:
    folder, record_path = one_cell_sweep
    copy = tmp_path / "sweep"
    shutil.copytree(folder, copy)
    record = copy / record_path.relative_to(folder)
    edited_copy(record, record, {"kwta_ratio": 0.5})
    trained, evaluated = count_work(monkeypatch)
    config = folder.parent / "s.yaml"
    assert main(["sweep", str(config), "--out-dir", str(copy), "--no-progress", "--no-plots"]) == 0
    assert trained.calls == [] and evaluated.calls == [str(record.parent)]  # the checkpoint reused, evaluated again
    assert load_record(record).model["sweep_cell"]["kwta_ratio"] == 0.25
    (aside,) = (record.parent / "superseded").iterdir()  # the edited record kept, not overwritten
    assert json.loads(aside.read_text(encoding="utf-8"))["model"]["sweep_cell"]["kwta_ratio"] == 0.5
    assert "| 0.25 " in (copy / "matrices.md").read_text(encoding="utf-8")
    assert "| 0.5 " not in (copy / "matrices.md").read_text(encoding="utf-8")
