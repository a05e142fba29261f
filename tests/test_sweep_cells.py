"""What names a sweep cell and what becomes of a job its executor lost: a cell is named by the architecture's
resolved arguments (the factory's defaults updated by ``arch_kwargs``), so a changed default in the model zoo makes
a new cell; a job the executor could not run (a worker died) is a failed cell in the manifest, retried by the next
run, never a finished one."""

from __future__ import annotations

import json

import kwta_robust.sweep.identity as identity
from kwta_robust.sweep import SweepConfig, cell_identity, plan_cells, run_sweep
from kwta_robust.sweep.executors import Completion, Executor
from kwta_robust.sweep.identity import HASH_CHARS, digest
from kwta_robust.training import TrainConfig
from test_sweep import tiny_config

SMALL = {"dataset": "digits", "arch": "cnn", "arch_kwargs": {"channels": [4, 8], "hidden": 16}, "device": "cpu"}


def wider_cnn(activation, num_classes=10, in_channels=1, input_size=28, mean=None, std=None, channels=(4, 8),
              hidden=256, kernel_size=7, batch_norm=False):
    """The cnn factory's signature with another default kernel size (a changed default in the model zoo)."""
    raise AssertionError("the identity reads the signature only")


def test_a_cell_is_named_by_the_architectures_resolved_arguments(monkeypatch) -> None:
    cfg = TrainConfig.from_dict(SMALL)
    named = cell_identity(cfg)
    # the factory's defaults (but the arguments create_model passes) updated by arch_kwargs, as plain data
    assert named["architecture"] == {"channels": [4, 8], "hidden": 16, "kernel_size": 5, "batch_norm": False}
    assert named["training"]["arch_kwargs"] == {"channels": [4, 8], "hidden": 16}
    monkeypatch.setattr(identity.MODELS, "get", lambda name, field=None: wider_cnn)
    changed = cell_identity(cfg)
    assert changed["architecture"]["kernel_size"] == 7 and changed["training"] == named["training"]
    assert digest(changed)[:HASH_CHARS] != digest(named)[:HASH_CHARS]  # a new cell: the old weights are not reused


class LostWorkers(Executor):
    """Every job is lost before it runs (a worker died): a completion with an error and no result."""

    name = "lost-workers"

    def map_unordered(self, fn, jobs, *, resources=None):
        for job in jobs:
            yield Completion(job, error="worker died: SIGKILL")


def test_a_job_the_executor_lost_is_a_failed_cell_not_a_finished_one(tmp_path) -> None:
    cfg = SweepConfig.from_dict(tiny_config(grid={"kwta_ratios": [1.0], "weight_sparsities": [0.0]}))
    plans = plan_cells(cfg, tmp_path)
    result = run_sweep(cfg, tmp_path, executor=LostWorkers(), progress=False)
    assert [p.cell_id for p in result.failed] == [p.cell_id for p in plans] and result.records() == []
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    assert manifest["status"] == "failed" and manifest["failed"] == [p.cell_id for p in plans]
    assert [(c["status"], c["error"], c["attempts"]) for c in manifest["cells"]] == \
        [("failed", "worker died: SIGKILL", 1)] * len(plans)
