"""What the sweep's manifest, outputs and executor section promise, read back from disk: statuses, attempts, errors
and earlier work across runs, atomic saves, the files a sweep writes and keeps its inputs out of, the resource
overrides of ``executor:`` and their one-line errors."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

import kwta_robust.rerun_jobs as rerun_jobs
import kwta_robust.results as results
from kwta_robust.errors import ConfigError
from kwta_robust.locks import OutputLock
from kwta_robust.sweep import CellOutcome, Resources, SweepConfig, plan_cells
from kwta_robust.sweep.manifest import Manifest, manifest_path, read_manifest
from kwta_robust.sweep.outputs import check_inputs_outside, write_outputs
from kwta_robust.sweep.placement import _resource, build_executor, cell_resources, factory_options
from test_matrix import grid_records
from test_sweep import tiny_config
from test_sweep_cells import LostWorkers

TWO_CELLS = {"kwta_ratios": [1.0, 0.25], "weight_sparsities": [0.0]}


def two_cells(tmp_path: Path):
    cfg = SweepConfig.from_dict(tiny_config(grid=TWO_CELLS))
    plans = plan_cells(cfg, tmp_path)
    assert len(plans) == 2
    return cfg, plans


def on_disk(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "sweep.json").read_text())


def cells_of(data: dict) -> list[dict]:
    return data["cells"]


# ---------------------------------------------------------------------------------------------------------------
# manifest
# ---------------------------------------------------------------------------------------------------------------
def test_statuses_attempts_and_errors_are_saved_after_every_cell(tmp_path) -> None:
    cfg, plans = two_cells(tmp_path)
    a, b = (p.cell_id for p in plans)
    first = Manifest(cfg, plans, tmp_path, LostWorkers())
    first.update(CellOutcome(a, "done", trained=False, evaluated=True, wall_time_s=1.23456, test_accuracy=0.9,
                             measured_sparsity=0.5), attempted=True)
    data = on_disk(tmp_path)
    assert data["status"] == "running" and data["runs"] == 1 and data["previous_status"] is None
    assert data["finished_at"] is None and data["failed"] == []
    assert [(c["status"], c["attempts"], c["wall_time_s"]) for c in cells_of(data)] == \
        [("done", 1, 1.235), ("pending", 0, None)]
    first.update(CellOutcome(b, "failed", error="RuntimeError: boom", wall_time_s=0.5), attempted=False)
    data = on_disk(tmp_path)
    assert data["failed"] == [b] and cells_of(data)[1]["error"] == "RuntimeError: boom"
    assert cells_of(data)[1]["attempts"] == 0  # not attempted (e.g. refused before it ran): no attempt counted
    first.finish("failed")
    data = on_disk(tmp_path)
    assert data["status"] == "failed" and isinstance(data["finished_at"], str)

    second = Manifest(cfg, plans, tmp_path, LostWorkers())
    second.save()
    data = on_disk(tmp_path)
    assert data["runs"] == 2 and data["previous_status"] == "failed" and data["status"] == "running"
    done, failed = cells_of(data)
    assert done["status"] == "pending" and done["attempts"] == 1 and done["previous_error"] is None
    assert done["test_accuracy"] == 0.9 and done["measured_sparsity"] == 0.5  # kept from the earlier run
    assert done["done_earlier"] == {"run": 1, "trained": False, "evaluated": True, "wall_time_s": 1.235}
    assert failed["previous_error"] == "RuntimeError: boom" and failed["done_earlier"] is None
    assert failed["error"] is None and failed["attempts"] == 0
    # run 2 reuses cell a (nothing redone: its accuracy stays the earlier one) and fails cell b again
    second.update(CellOutcome(a, "done", wall_time_s=0.01), attempted=True)
    second.update(CellOutcome(b, "failed", error="RuntimeError: again", wall_time_s=0.2), attempted=True)
    second.finish("failed")
    data = on_disk(tmp_path)
    assert cells_of(data)[0]["test_accuracy"] == 0.9 and cells_of(data)[0]["measured_sparsity"] == 0.5
    assert [c["attempts"] for c in cells_of(data)] == [2, 1]

    third = Manifest(cfg, plans, tmp_path, LostWorkers())
    done = third.index[a]
    assert third.data["runs"] == 3
    # the work was done in run 1; run 2 only reused it: the earlier work stays run 1's
    assert done["done_earlier"] == {"run": 1, "trained": False, "evaluated": True, "wall_time_s": 1.235}


def test_earlier_work_counts_an_evaluation_without_training_and_drops_a_later_failure(tmp_path) -> None:
    cfg, plans = two_cells(tmp_path)
    a, b = (p.cell_id for p in plans)
    first = Manifest(cfg, plans, tmp_path, LostWorkers())
    first.update(CellOutcome(a, "done", trained=False, evaluated=True, wall_time_s=2.0), attempted=True)
    first.update(CellOutcome(b, "done", trained=True, evaluated=True, wall_time_s=3.0), attempted=True)
    first.finish("complete")
    second = Manifest(cfg, plans, tmp_path, LostWorkers())
    assert second.index[a]["done_earlier"] == {"run": 1, "trained": False, "evaluated": True, "wall_time_s": 2.0}
    second.update(CellOutcome(b, "failed", error="OSError: disk", wall_time_s=0.1), attempted=True)
    second.finish("failed")
    third = Manifest(cfg, plans, tmp_path, LostWorkers())
    # b failed in run 2 (its record may be gone): no earlier work is claimed for it
    assert third.index[b]["done_earlier"] is None and third.index[b]["previous_error"] == "OSError: disk"
    assert third.index[b]["attempts"] == 2


def test_a_manifest_left_running_under_the_new_runs_lock_reads_interrupted(tmp_path) -> None:
    cfg, plans = two_cells(tmp_path)
    path = manifest_path(tmp_path)
    path.write_text(json.dumps({"format": "kwta-robust-sweep", "status": "running", "runs": 4, "cells": []}))
    with OutputLock(path, "--out-dir"):  # the new run holds the folder: the old driver did not end cleanly
        manifest = Manifest(cfg, plans, tmp_path, LostWorkers())
    assert manifest.data["previous_status"] == "interrupted" and manifest.data["runs"] == 5


@pytest.mark.parametrize("old", [{"format": "other-tool", "status": "complete", "runs": 7, "cells": []},
                                 {"format": "kwta-robust-sweep", "runs": True, "cells": []}])
def test_a_foreign_or_damaged_manifest_starts_the_count_again(tmp_path, old) -> None:
    cfg, plans = two_cells(tmp_path)
    manifest_path(tmp_path).write_text(json.dumps(old))
    assert read_manifest(manifest_path(tmp_path)) == {}
    manifest = Manifest(cfg, plans, tmp_path, LostWorkers())
    assert manifest.data["runs"] == 1 and manifest.data["previous_status"] is None


def test_a_save_that_dies_before_its_rename_leaves_the_previous_manifest_whole(tmp_path, monkeypatch) -> None:
    cfg, plans = two_cells(tmp_path)
    manifest = Manifest(cfg, plans, tmp_path, LostWorkers())
    manifest.save()
    before = (tmp_path / "sweep.json").read_text()

    def dies(*args, **kwargs):
        raise OSError("killed mid-save")

    monkeypatch.setattr(results.os, "replace", dies)
    with pytest.raises(OSError, match="killed mid-save"):
        manifest.finish("complete")
    assert (tmp_path / "sweep.json").read_text() == before and json.loads(before)["status"] == "running"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


# ---------------------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------------------
def test_every_matrices_file_and_plot_is_written_and_returned(tmp_path) -> None:
    written = write_outputs(grid_records(), tmp_path, title="Grid", notes=["a note only the caller knows"])
    assert sorted(p.name for p in written["tables"]) == ["matrices.csv", "matrices.md", "matrices.tex"]
    assert all(p.parent == tmp_path and p.stat().st_size > 0 for p in written["tables"])
    assert "a note only the caller knows" in (tmp_path / "matrices.md").read_text()
    on_disk_plots = sorted((tmp_path / "plots").rglob("*.png"))
    assert on_disk_plots and sorted(written["plots"]) == on_disk_plots
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in on_disk_plots)


def test_without_plots_only_the_tables_are_written(tmp_path) -> None:
    written = write_outputs(grid_records(), tmp_path, plots=False)
    assert written["plots"] == [] and not (tmp_path / "plots").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matrices.csv", "matrices.md", "matrices.tex"]


@pytest.mark.parametrize("name", ["sweep.json", "report.html", "matrices.md", "matrices.csv", "matrices.tex",
                                  "plots/inputs.yaml", "cells/x/train.yaml"])
def test_an_input_the_sweep_would_overwrite_is_refused_in_one_line(tmp_path, name) -> None:
    given = tmp_path / "out" / name
    with pytest.raises(ConfigError) as info:
        check_inputs_outside([tmp_path / "elsewhere.yaml", given], tmp_path / "out")
    message = str(info.value)
    assert message.startswith("--out-dir: the sweep writes ") and str(given) in message and "\n" not in message


def test_inputs_beside_the_outputs_are_accepted(tmp_path) -> None:
    out = tmp_path / "out"
    beside = [out / "sweep.yaml", out / "plots.yaml", out / "cellsx" / "a.yaml", tmp_path / "s.yaml"]
    assert check_inputs_outside(beside, out) is None  # names next to the outputs: no error
    with pytest.raises(ConfigError, match="^--out-dir: the sweep writes .*plots.a.yaml"):
        check_inputs_outside([*beside, out / "plots" / "a.yaml"], out)  # the same names inside its plots folder


# ---------------------------------------------------------------------------------------------------------------
# placement
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value,message", [
    ("cpus_per_cell", True, "executor.cpus_per_cell: expected a finite number > 0, got True"),
    ("gpus_per_cell", False, "executor.gpus_per_cell: expected a finite number >= 0, got False"),
    ("cpus_per_cell", math.inf, "executor.cpus_per_cell: expected a finite number > 0, got inf"),
    ("gpus_per_cell", math.nan, "executor.gpus_per_cell: expected a finite number >= 0, got nan"),
    ("cpus_per_cell", "2", "executor.cpus_per_cell: expected a finite number > 0, got '2'"),
    ("cpus_per_cell", -0.5, "executor.cpus_per_cell: expected a finite number > 0, got -0.5"),
    ("gpus_per_cell", -0.25, "executor.gpus_per_cell: expected a finite number >= 0, got -0.25"),
])
def test_a_bad_resource_count_is_a_one_line_error(key, value, message) -> None:
    with pytest.raises(ConfigError) as info:
        _resource(value, key)
    assert str(info.value) == message


def test_resource_counts_in_range_are_floats() -> None:
    assert _resource(0, "gpus_per_cell") == 0.0 and _resource(0.5, "cpus_per_cell") == 0.5
    assert _resource(3, "cpus_per_cell") == 3.0 and isinstance(_resource(3, "cpus_per_cell"), float)


def test_the_ray_executor_checks_every_resource_key() -> None:
    for options in ({"gpus_per_cell": -1}, {"cpus_per_cell": 2, "gpus_per_cell": -1},
                    {"cpus_per_cell": None, "gpus_per_cell": "1"}):
        with pytest.raises(ConfigError, match="executor.gpus_per_cell: expected a finite number >= 0"):
            build_executor("ray", 2, options)
    executor = build_executor("ray", 2, {"address": "auto", "cpus_per_cell": 2, "gpus_per_cell": 0})
    assert executor.describe()["address"] == "auto" and executor.workers == 2


def test_a_local_executor_refuses_any_resource_key() -> None:
    for options in ({"gpus_per_cell": 1}, {"cpus_per_cell": None, "gpus_per_cell": 0.5}):
        with pytest.raises(ConfigError, match="executor.gpus_per_cell: the 'local' executor does not reserve"):
            build_executor("local", 1, options)
    assert build_executor("local", 1, {"cpus_per_cell": None, "gpus_per_cell": None}).workers == 1


def test_factory_options_leave_out_the_resource_keys() -> None:
    assert factory_options({"address": "auto", "cpus_per_cell": 2, "gpus_per_cell": None, "max_retries": 1}) == \
        {"address": "auto", "max_retries": 1}


class Asks:
    """A plan asking for ``cpus`` cores and ``gpus`` GPUs."""

    def __init__(self, cpus: float, gpus: float) -> None:
        self.asked = Resources(cpus=cpus, gpus=gpus)

    def resources(self) -> Resources:
        return self.asked


def test_cell_resources_default_to_the_drivers_threads_but_at_least_the_plans_own(monkeypatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    default = cell_resources({})
    assert default(Asks(3.0, 0.25)) == Resources(cpus=3.0, gpus=0.25)  # the plan asks more than the driver runs
    assert default(Asks(1.0, 0.0)) == Resources(cpus=2.0, gpus=0.0)  # the driver's threads
    overridden = cell_resources({"cpus_per_cell": 1, "gpus_per_cell": 0})
    assert overridden(Asks(3.0, 1.0)) == Resources(cpus=1.0, gpus=0.0)
    assert cell_resources({"gpus_per_cell": 0.5})(Asks(1.0, 1.0)) == Resources(cpus=2.0, gpus=0.5)


# ---------------------------------------------------------------------------------------------------------------
# re-run batches
# ---------------------------------------------------------------------------------------------------------------
class Verified:
    """What ``run_verified`` saw and the outcome it gives back: inputs 4 and 6 broken, 17 queries."""

    def __init__(self) -> None:
        self.seen: dict = {}

    def __call__(self, model, attack, x, y, threat, active, batch_size, **kwargs):
        self.seen = {"attack": attack, "threat": (threat.norm, threat.eps), "batch_size": batch_size,
                     "active": active.nonzero().flatten().tolist(), **kwargs}
        success = torch.zeros(x.shape[0], dtype=torch.bool)
        success[[0, 4, 6]] = True  # 0 was not sampled: not counted
        return type("Outcome", (), {"success": success, "queries": 17})()


def test_a_re_run_batch_runs_its_own_attack_seed_layers_draws_and_verdict_seed(monkeypatch) -> None:
    made, verified = [], Verified()
    monkeypatch.setattr(rerun_jobs, "create_attack", lambda name, **kw: made.append((name, kw)) or "the attack")
    monkeypatch.setattr(rerun_jobs, "run_verified", verified)
    job = rerun_jobs.RerunBatch("bpda-smooth", "bpda", {"steps": 3, "seed": 99}, 5, "l2", 0.5, (1, 4, 6), 11, 1234)
    layers = {"bpda-smooth": {"kwta.0": {"surrogate": "smooth"}}, "bpda": {"wrong": {}}}
    broken, queries = rerun_jobs.run_rerun_batch(nn_free_model(), torch.zeros(8, 2), torch.zeros(8), job, 4, layers)
    assert (broken, queries) == ([4, 6], 17)
    assert made == [("bpda", {"steps": 3, "seed": 5, "layers": {"kwta.0": {"surrogate": "smooth"}}})]
    seen = verified.seen
    assert seen["attack"] == "the attack" and seen["threat"] == ("l2", 0.5) and seen["active"] == [1, 4, 6]
    assert seen["batch_size"] == 4 and seen["draws"] == 11 and seen["verdict_seed_for"](torch.tensor([1])) == 1234
    # the model's RNG per batch: the job's seed and the batch's sample ids (sha256 of the JSON, first 4 bytes)
    expected = int.from_bytes(hashlib.sha256(b'[5, ["model-rng", "3", "7"]]').digest()[:4], "big") & 0x7FFFFFFF
    assert seen["rng_seed_for"](torch.tensor([3, 7])) == expected
    made.clear()
    rerun_jobs.run_rerun_batch(nn_free_model(), torch.zeros(8, 2), torch.zeros(8),
                               rerun_jobs.RerunBatch("pgd", "pgd", {}, 2, "linf", 0.1, (0,)), 4, layers)
    assert made == [("pgd", {"seed": 2})] and verified.seen["draws"] == 1  # no layers of its own, one draw
    assert verified.seen["verdict_seed_for"](torch.tensor([0])) is None


def nn_free_model():
    """The model is only passed through to ``run_verified``."""
    return object()


@pytest.mark.parametrize("attempts", ["x", None, -1, True, 1.5])
def test_a_manifest_whose_attempts_are_not_counts_is_damaged_not_a_traceback(tmp_path, attempts, caplog) -> None:
    cfg, plans = two_cells(tmp_path)
    cell = {"cell_id": plans[0].cell_id, "status": "failed", "attempts": attempts, "error": "E: x"}
    manifest_path(tmp_path).write_text(json.dumps({"format": "kwta-robust-sweep", "runs": 3, "cells": [cell]}))
    with caplog.at_level("WARNING"):
        assert read_manifest(manifest_path(tmp_path)) == {}
    assert f"cells[0].attempts: expected a count, got {attempts!r}" in caplog.text
    manifest = Manifest(cfg, plans, tmp_path, LostWorkers())
    assert manifest.data["runs"] == 1 and manifest.index[plans[0].cell_id]["attempts"] == 0


def test_a_manifest_that_is_not_utf8_is_unreadable_not_a_traceback(tmp_path, caplog) -> None:
    manifest_path(tmp_path).write_bytes(b'{"format": "kwta-robust-sweep", "name": "\xff\xfe"}')
    with caplog.at_level("WARNING"):
        assert read_manifest(manifest_path(tmp_path)) == {}
    assert "is unreadable" in caplog.text
