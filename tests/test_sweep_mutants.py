"""What makes a sweep cell finished, what a plan ships and what the grid accepts: a cell's record is reused only
when it is complete, of this cell's id and of this evaluation config (and not a randomized model's verdicts drawn
afresh); a reused cell's outcome is ``done``, neither trained nor evaluated, and carries the record's test accuracy
and measured weight sparsity; a cell that raises is a ``failed`` outcome; a plan's resources count a GPU for either
config on CUDA; a plan keeps its ``progress`` flag; the grid's bounds are (0, 1] and [0, 1).

These tests kill the survivors of a mutation round on ``kwta_robust/sweep/cells.py``, ``plans.py`` and
``grid.py`` (tiny hand-made records and configs; nothing trains).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import kwta_robust.sweep.cells as cells
from eval_helpers import make_record, rehash
from kwta_robust.errors import ConfigError
from kwta_robust.results import save_record
from kwta_robust.sweep import (DENSE, CellOutcome, CellPlan, Grid, GridCell, Resources, SweepConfig, cell_identity,
                               plan_cells)
from kwta_robust.sweep.identity import HASH_CHARS, digest
from test_sweep import tiny_config
from test_sweep_reuse import _plan, trainings  # noqa: F401 - trainings is a fixture

EVAL = {"dataset": "digits", "n_examples": 8}


def _finished(tmp_path: Path, **model) -> tuple[CellPlan, object]:
    """A plan of the package's own cnn (no checkpoint on disk) and a complete record of it, saved at its path."""
    plan, _, _ = _plan(tmp_path, "cnn", 28)
    plan = dataclasses.replace(plan, eval=dict(EVAL))
    record = make_record()
    record.config = dict(plan.eval)
    rehash(record)
    record.model.update({"sweep_cell": {"cell_id": plan.cell_id}, **model})
    save_record(record, plan.record_path)
    return plan, record


def test_a_complete_record_of_this_cell_and_config_is_reused(tmp_path) -> None:
    plan, record = _finished(tmp_path)
    found = cells.finished_record(plan)
    assert found is not None and found.model["sweep_cell"]["cell_id"] == plan.cell_id
    record.config = {**EVAL, "device": "cuda"}  # placement does not name a record
    save_record(record, plan.record_path)
    assert cells.finished_record(plan) is not None


def test_a_finished_record_stands_when_its_checkpoint_is_gone_or_unreadable(tmp_path) -> None:
    """Only a checkpoint that says its training broke an invariant sends a finished record back to evaluation; one
    that is gone (space freed) or cannot be read says nothing of the kind ("redoes no finished cell")."""
    plan, _ = _finished(tmp_path)
    assert not plan.checkpoint.exists() and cells.finished_record(plan) is not None
    plan.checkpoint.write_bytes(b"not a checkpoint")
    assert cells.finished_record(plan) is not None


def test_no_record_is_not_finished(tmp_path) -> None:
    plan, _ = _finished(tmp_path)
    Path(plan.record_path).unlink()
    assert cells.finished_record(plan) is None
    Path(plan.record_path).write_text("{not json")
    assert cells.finished_record(plan) is None  # unreadable: evaluated again, never fatal


@pytest.mark.parametrize("change", ["partial", "other cell", "no cell", "other config"])
def test_a_record_that_is_not_this_cells_finished_evaluation_is_not_reused(tmp_path, change) -> None:
    plan, record = _finished(tmp_path)
    if change == "partial":
        record.status = "partial"
    elif change == "other cell":
        record.model["sweep_cell"] = {"cell_id": plan.cell_id + "x"}
    elif change == "no cell":
        del record.model["sweep_cell"]
    else:
        record.config = {**EVAL, "n_examples": 9}
    save_record(record, plan.record_path)
    assert cells.finished_record(plan) is None


def test_a_randomized_models_verdicts_drawn_afresh_are_evaluated_again(tmp_path) -> None:
    plan, record = _finished(tmp_path)
    record.provenance["randomness"] = {"randomized": True}  # written before the verdicts shared the clean draws
    save_record(record, plan.record_path)
    assert cells.finished_record(plan) is None
    record.provenance["randomness"] = {"randomized": True, "common_draws": True}
    save_record(record, plan.record_path)
    assert cells.finished_record(plan) is not None


def test_a_finished_cell_is_reported_done_without_training_or_evaluating(tmp_path, trainings) -> None:
    plan, _ = _finished(tmp_path, training={"test_accuracy": 0.75}, weight_sparsity={"overall": 0.5, "mean": 0.1})
    outcome = cells.run_cell(plan)
    assert (outcome.status, outcome.trained, outcome.evaluated, outcome.error) == ("done", False, False, None)
    assert outcome.test_accuracy == 0.75 and outcome.measured_sparsity == 0.5
    assert outcome.record_path == plan.record_path and outcome.cell_id == plan.cell_id and trainings == []


def test_a_cell_that_raises_is_a_failed_outcome(tmp_path, trainings) -> None:
    plan, _ = _finished(tmp_path)
    Path(plan.record_path).unlink()  # no record; the (stand-in) training writes no checkpoint: loading it fails
    outcome = cells.run_cell(plan)
    assert outcome.status == "failed" and outcome.error and "\n" not in outcome.error
    assert trainings == [plan.train["out"]] and outcome.cell_id == plan.cell_id


def test_a_checkpoint_without_training_settings_is_trained_again(tmp_path, trainings) -> None:
    from test_sweep_reuse import _save

    plan, cfg, shape = _plan(tmp_path, "cnn", 28)
    _save(cfg, shape, training=None)
    assert cells.ensure_checkpoint(plan) == (Path(cfg.out), True) and trainings == [cfg.out]


def _with_devices(plan: CellPlan, train: str, evaluation: str, threads=None) -> CellPlan:
    return dataclasses.replace(plan, train={**plan.train, "device": train, "threads": threads},
                               eval={**plan.eval, "device": evaluation})


def test_resources_count_a_gpu_when_either_config_runs_on_cuda(tmp_path, monkeypatch) -> None:
    plan, _, _ = _plan(tmp_path, "cnn", 28)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _with_devices(plan, "cpu", "cpu").resources() == Resources(cpus=1.0, gpus=0.0)
    assert _with_devices(plan, "cuda", "cpu").resources() == Resources(cpus=1.0, gpus=1.0)
    assert _with_devices(plan, "cpu", "cuda:1", threads=4).resources() == Resources(cpus=4.0, gpus=1.0)
    assert _with_devices(plan, "auto", "cpu").resources().gpus == 0.0  # auto: a GPU only where one is seen
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _with_devices(plan, "auto", "cpu").resources().gpus == 1.0
    assert _with_devices(plan, "cpu", "cpu").resources().gpus == 0.0


def test_a_plan_keeps_its_progress_flag_and_names_its_cell(tmp_path) -> None:
    cfg = SweepConfig.from_dict(tiny_config())
    plans = plan_cells(cfg, tmp_path, progress=False)
    assert plans and all(p.progress is False for p in plans)
    for plan in plans:
        assert CellPlan.from_dict(json.loads(json.dumps(plan.to_dict()))).progress is False
        info = plan.cell_info()
        assert (info["cell_id"], info["sweep"], info["directory"]) == (plan.cell_id, "tiny", plan.directory)
    assert all(p.progress is True for p in plan_cells(cfg, tmp_path))
    for plan in plans:  # the id is the first HASH_CHARS characters of the hash of the cell's training identity
        assert plan.cell_id == digest(cell_identity(cfg.train_config(plan.cell)))[:HASH_CHARS]
    extra = {**plans[0].to_dict(), "retries": 2}
    with pytest.raises(ConfigError, match="cell plan: expected the keys"):
        CellPlan.from_dict(extra)
    with pytest.raises(ConfigError, match="cell outcome: unknown key 'retries'"):
        CellOutcome.from_dict({"cell_id": "a", "status": "done", "retries": 2})


@pytest.mark.parametrize("shipped,name", [(None, "NoneType"), (7, "int")])
def test_a_shipped_plan_that_is_not_a_mapping_is_a_config_error(shipped, name) -> None:
    """Bug fixed in this round: the error message ran sorted() on it, so it raised TypeError, not ConfigError."""
    with pytest.raises(ConfigError, match=f"cell plan: expected the keys .*, got '{name}'"):
        CellPlan.from_dict(shipped)


def test_the_grid_bounds_are_open_at_zero_for_ratios_and_at_one_for_sparsities() -> None:
    grid = Grid.from_dict({"kwta_ratios": [1.0, 0.5], "weight_sparsities": [0.0, 0.9],
                           "pruning_methods": ["magnitude", "rigl"]})
    assert grid.cells() == [GridCell(1.0, 0.0, DENSE), GridCell(1.0, 0.9, "magnitude"), GridCell(1.0, 0.9, "rigl"),
                            GridCell(0.5, 0.0, DENSE), GridCell(0.5, 0.9, "magnitude"), GridCell(0.5, 0.9, "rigl")]
    assert [c.label for c in grid.cells()[:3]] == ["relu-dense", "relu-magnitude0.9", "relu-rigl0.9"]
    assert GridCell(0.05, 0.25, "rigl").label == "kwta0.05-rigl0.25"
    assert [c.to_dict()["activation"] for c in grid.cells()] == ["relu"] * 3 + ["kwta"] * 3
    for bad in ({"kwta_ratios": [0.0], "weight_sparsities": [0.5]}, {"kwta_ratios": [0.5], "weight_sparsities": [1.0]},
                {"kwta_ratios": [1.0000001], "weight_sparsities": [0.5]}):
        with pytest.raises(ConfigError):
            Grid.from_dict(bad)
