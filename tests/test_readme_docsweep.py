"""Docstring audit of the scale-out side (sweep executors): the promises a user relies on that no other
test pinned — the pool's per-worker thread cap (``cores // processes``, at least 1, never above the driver's count),
the pool's and the Ray executor's refusals of a bad worker count or retry count, and the Ray task's torch threads
(``floor(cpus)``, at least 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kwta_robust.sweep.executors.pool as pool_module
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.sweep import Resources, create_executor
from kwta_robust.sweep.executors.ray import task_threads
from test_runtime import restore_threads  # noqa: F401 - a fixture


def worker_threads(_job: object) -> int:
    """What a pool worker runs: its torch thread count."""
    return torch.get_num_threads()


def test_pool_workers_get_the_drivers_threads_capped_at_cores_per_process(restore_threads, monkeypatch) -> None:
    # pool.py: "each with the driver's torch thread count ... capped at cores // processes"
    torch.set_num_threads(3)  # the driver's (restore_threads puts the caller's count back)
    monkeypatch.setattr(pool_module, "cpu_count", lambda: 2)
    pool = create_executor("pool", 2)
    counts = [c.result for c in pool.map_unordered(worker_threads, [0])]  # one job: one process is spawned
    assert counts == [2]  # the worker really runs min(3 driver threads, 2 cores // 1 process) threads
    for cores, workers, expected in ((16, 2, 3), (4, 2, 2), (3, 2, 1), (2, 4, 1)):  # never 0, never above 3
        monkeypatch.setattr(pool_module, "cpu_count", lambda cores=cores: cores)
        started = pool._start(workers)  # no process is spawned before a job is submitted
        assert started._initargs[0] == expected, (cores, workers)
        started.shutdown(wait=False)


def test_a_process_pool_of_one_worker_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        create_executor("pool", 1)
    assert str(caught.value) == "executor.workers: a process pool needs at least 2 workers, got 1"


def test_a_negative_ray_retry_count_is_one_error_line_before_anything_runs(tmp_path: Path, capsys) -> None:
    from test_sweep import tiny_config, write_config  # not at the top: it sets one torch thread where it is imported,
    # and the pool workers above import this module (the test of their thread count would read that)

    config = write_config(tmp_path / "sweep.yaml", tiny_config(executor={"name": "ray", "max_retries": -1}))
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out-dir", str(out), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "error: executor.max_retries: expected an integer >= 0 (retries of a task whose worker died), got -1")
    assert not out.exists()  # nothing trained, nothing written


def test_a_ray_task_runs_floor_of_its_reserved_cores_at_least_one() -> None:
    assert [task_threads(Resources(cpus=c)) for c in (0.5, 1.0, 1.9, 2.0, 7.99)] == [1, 1, 1, 2, 7]
    with pytest.raises(ConfigError, match=r"^resources: need cpus > 0 and gpus >= 0, got cpus=0, gpus=0.0$"):
        Resources(cpus=0)
