"""One thread policy for every executor: a sweep cell evaluates with the driver's torch thread count (``--threads``)
and trains with ``train.threads`` whether it runs in-line or as a Ray task, so both give the same record; the task
reserves as many cores as the cell uses (``--cpus-per-cell`` reserves cores and changes no thread count)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.sweep import Resources, SweepConfig, run_sweep
from kwta_robust.sweep.executors.ray import RayExecutor
from test_runtime import restore_threads  # noqa: F401 - a fixture
from test_sweep import numbers, tiny_config
from test_sweep_ray import HookedRay, local_ray, report_worker  # noqa: F401 - local_ray: a fixture (a 2-CPU Ray)

ONE_CELL = {"kwta_ratios": [0.25], "weight_sparsities": [0.0], "pruning_methods": ["magnitude"]}


def sweep_one_cell(out: Path, train_threads: int, executor: dict, hooked: HookedRay | None = None):
    """The one-cell sweep's record and checkpoint, run by ``executor`` from a driver with one torch thread."""
    base = tiny_config()
    cfg = SweepConfig.from_dict(tiny_config(grid=ONE_CELL, executor=executor,
                                            train={**base["train"], "threads": train_threads, "epochs": 1},
                                            eval={**base["eval"], "attacks": base["eval"]["attacks"][:1],
                                                  "n_examples": 8, "batch_size": 8, "noise": [],
                                                  "threats": [{"norm": "linf", "epsilons": [0.1]}]}))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the driver's --threads 1 (the CLI's default)
    try:
        result = run_sweep(cfg, out, executor=hooked, progress=False)
    finally:
        torch.set_num_threads(before)
    assert result.failed == [] and result.manifest["status"] == "complete"
    (record,) = result.records()
    return record, load_checkpoint(result.plans[0].checkpoint).metadata


def test_a_ray_cell_uses_the_inline_runs_threads(local_ray, tmp_path) -> None:
    """train.threads (2) above the driver's --threads (1): both runs train with 2 threads and evaluate with 1 (the Ray
    task used to evaluate with 2, one per reserved core), and the task reserves the 2 cores its training uses."""
    inline, inline_meta = sweep_one_cell(tmp_path / "inline", 2, {"name": "inline"})
    folder = tmp_path / "where"
    folder.mkdir()
    hooked = HookedRay(functools.partial(report_worker, str(folder)), workers=1)
    ray, ray_meta = sweep_one_cell(tmp_path / "ray", 2, {"name": "ray", "workers": 1}, hooked)
    assert inline.provenance["torch_threads"] == ray.provenance["torch_threads"] == 1  # the driver's --threads
    assert inline_meta["torch_threads"] == ray_meta["torch_threads"] == 2  # trained with train.threads
    assert numbers(ray) == numbers(inline)
    (facts,) = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    assert facts["cpus"] == 2 and facts["threads"] == 1  # the cores its training uses; the driver's count at start


def test_reserved_cores_change_no_thread_count(local_ray, tmp_path, restore_threads) -> None:
    """``--cpus-per-cell 2`` (a reservation of 2 cores) from a driver with one thread: the task runs one thread."""
    torch.set_num_threads(1)
    job = SimpleNamespace(label="job")
    executor = RayExecutor(1)
    (done,) = executor.map_unordered(functools.partial(report_worker, str(tmp_path), str), [job],
                                     resources=lambda _: Resources(cpus=2.0))
    assert done.error is None and done.result == str(job)
    assert json.loads((tmp_path / "job.json").read_text())["threads"] == 1
