"""A sweep reuses a cell's checkpoint only when its training kept every invariant its model needs: a nupic
``SparseWeights`` / ``KWinners`` model trained before the loop re-zeroed weights and decayed boosting is trained
again; the package's own models (neither method) are reused whatever the checkpoint says."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import kwta_robust.sweep.cells as cells
from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.data import TensorData
from kwta_robust.sweep import CellPlan, GridCell
from kwta_robust.training import KEPT_INVARIANTS, TrainConfig, build_spec, invariants_needed


def _plan(tmp_path: Path, arch: str, input_size: int) -> tuple[CellPlan, TrainConfig, TensorData]:
    cfg = TrainConfig.from_dict({"arch": arch, "dataset": "mnist5k", "epochs": 1, "seed": 0, "device": "cpu",
                                 "out": str(tmp_path / "model.pt"),
                                 "activation": {"name": "kwta", "k_ratio": 0.1}})
    shape = TensorData(torch.zeros(1, 1, input_size, input_size), torch.zeros(1, dtype=torch.long), "mnist5k", 10,
                       torch.arange(1))
    plan = CellPlan(GridCell(0.1, 0.0, "dense"), "id", str(tmp_path), cfg.to_dict(), {}, str(tmp_path / "r.json"))
    return plan, cfg, shape


def _save(cfg: TrainConfig, shape: TensorData, **metadata) -> None:
    spec = build_spec(cfg, shape)
    save_checkpoint(cfg.out, spec.build(), spec, {"training": cfg.to_dict(), **metadata})


@pytest.fixture
def trainings(monkeypatch) -> list[str]:
    """Stands in for training (records the checkpoint it would write)."""
    calls: list[str] = []

    def fake(cfg: TrainConfig) -> SimpleNamespace:
        calls.append(cfg.out)
        return SimpleNamespace(checkpoint=cfg.out)

    monkeypatch.setattr(cells, "run_training", fake)
    return calls


def test_nupic_checkpoint_trained_before_the_loop_kept_its_invariants_is_trained_again(
        tmp_path, trainings, caplog) -> None:
    plan, cfg, shape = _plan(tmp_path, "nupic-sparse-cnn", 28)
    assert invariants_needed(build_spec(cfg, shape).build()) == ["rezero_weights", "update_boost_strength"]
    _save(cfg, shape)  # metadata as written before the loop kept them: no training_invariants
    with caplog.at_level(logging.INFO, logger=cells.__name__):
        assert cells.ensure_checkpoint(plan) == (Path(cfg.out), True)
    assert trainings == [cfg.out]
    assert "was trained before the training loop called rezero_weights() and update_boost_strength()" in caplog.text
    _save(cfg, shape, training_invariants=["rezero_weights"])  # one kept, the other not
    assert cells.ensure_checkpoint(plan)[1] is True
    _save(cfg, shape, training_invariants=list(KEPT_INVARIANTS))
    assert cells.ensure_checkpoint(plan) == (Path(cfg.out), False) and len(trainings) == 2


def test_own_model_checkpoint_is_reused_without_the_invariants_record(tmp_path, trainings) -> None:
    plan, cfg, shape = _plan(tmp_path, "cnn", 28)
    assert invariants_needed(build_spec(cfg, shape).build()) == []
    _save(cfg, shape)
    assert cells.ensure_checkpoint(plan) == (Path(cfg.out), False) and trainings == []


def test_training_records_the_invariants_it_keeps(tmp_path) -> None:
    from kwta_robust.checkpoint import load_checkpoint
    from kwta_robust.training import run_training

    cfg = TrainConfig.from_dict({"arch": "cnn", "dataset": "digits", "epochs": 1, "seed": 0, "device": "cpu",
                                 "arch_kwargs": {"channels": [2], "hidden": 8, "kernel_size": 3},
                                 "out": str(tmp_path / "m.pt")})
    result = run_training(cfg)
    assert load_checkpoint(result.checkpoint).metadata["training_invariants"] == list(KEPT_INVARIANTS)


@pytest.mark.parametrize("recorded", [None, "rezero_weights update_boost_strength",
                                      {"rezero_weights": False, "update_boost_strength": False}, 7])
def test_training_invariants_that_are_not_a_list_record_none(tmp_path, trainings, recorded) -> None:
    """None stopped the cell (TypeError: 'in' on None); a string was searched by substring and a mapping by key,
    so both reused a checkpoint whose training kept nothing."""
    plan, cfg, shape = _plan(tmp_path, "nupic-sparse-cnn", 28)
    _save(cfg, shape, training_invariants=recorded)
    assert cells.ensure_checkpoint(plan) == (Path(cfg.out), True) and trainings == [cfg.out]


def test_a_finished_record_of_a_checkpoint_that_did_not_keep_its_invariants_is_not_reused(tmp_path) -> None:
    """run_cell returns a finished record before ensure_checkpoint looks at the checkpoint: a nupic cell trained
    and evaluated before the loop kept its invariants kept its dense, initial-beta numbers in the matrix."""
    from eval_helpers import make_record, rehash
    from kwta_robust.results import save_record

    plan, cfg, shape = _plan(tmp_path, "nupic-sparse-cnn", 28)
    record = make_record()
    record.config, record.model["sweep_cell"] = dict(plan.eval), {"cell_id": plan.cell_id}
    rehash(record)  # its config as a run hashes it
    save_record(record, plan.record_path)
    _save(cfg, shape)
    assert cells.finished_record(plan) is None
    _save(cfg, shape, training_invariants=list(KEPT_INVARIANTS))
    assert cells.finished_record(plan) is not None
    own, own_cfg, own_shape = _plan(tmp_path / "own", "cnn", 28)
    record.model["sweep_cell"] = {"cell_id": own.cell_id}
    save_record(record, own.record_path)
    _save(own_cfg, own_shape)
    assert cells.finished_record(own) is not None


def test_evaluate_warns_on_a_checkpoint_trained_here_before_the_loop_kept_its_invariants(tmp_path, caplog) -> None:
    from kwta_robust.loading import load_model

    plan, cfg, shape = _plan(tmp_path, "nupic-sparse-cnn", 28)
    _save(cfg, shape)
    with caplog.at_level(logging.WARNING, logger="kwta_robust.loading"):
        load_model(cfg.out, "cpu")
    assert "before its training loop called rezero_weights() and update_boost_strength()" in caplog.text
    caplog.clear()
    _save(cfg, shape, training_invariants=list(KEPT_INVARIANTS))
    with caplog.at_level(logging.WARNING, logger="kwta_robust.loading"):
        load_model(cfg.out, "cpu")
    assert "training loop called" not in caplog.text


def test_a_finished_cell_whose_attacks_ran_with_other_settings_is_evaluated_again(tmp_path, caplog) -> None:
    """A sweep reuses a complete cell record without the runner's resume check: a record of another version's
    attack defaults would have stood in the matrix beside cells evaluated with this version's."""
    from eval_helpers import make_record, make_result, rehash
    from kwta_robust.attack_plan import planned_settings
    from kwta_robust.config import EvalConfig
    from kwta_robust.results import save_record

    plan, _, _ = _plan(tmp_path, "cnn", 28)
    plan = dataclasses.replace(plan, eval={
        "dataset": "mnist5k", "threats": [{"norm": "linf", "epsilons": [0.1]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 3}}], "diagnostics": {"enabled": False}})
    settings = planned_settings(EvalConfig.from_dict(plan.eval), 10, {})["pgd"]
    record = make_record([make_result("pgd", [1, 0, 1])])
    record.config, record.model["sweep_cell"] = dict(plan.eval), {"cell_id": plan.cell_id}
    rehash(record)  # its config as a run hashes it
    record.dataset["num_classes"] = 10
    record.results[0].settings = dict(settings)
    save_record(record, plan.record_path)
    assert cells.finished_record(plan) is not None  # this version's settings: reused
    record.results[0].settings = {**settings, "step_size": 0.025}  # as an earlier version's default ran
    save_record(record, plan.record_path)
    with caplog.at_level(logging.INFO, logger=cells.__name__):
        assert cells.finished_record(plan) is None
    assert "evaluating again" in caplog.text and "other attack settings (pgd: step_size 0.025 → 2.5*eps/steps" in \
        caplog.text
    record.results[0].settings = None  # written before settings were stored: nothing to compare, reused
    save_record(record, plan.record_path)
    assert cells.finished_record(plan) is not None
