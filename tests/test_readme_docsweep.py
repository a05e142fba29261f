"""Docstring audit of the scale-out side (sweep executors): the promises a user relies on that no other
test pinned — the pool's workers run the driver's thread count whatever the cores (no cap: it would move the
numbers), the pool's and the Ray executor's refusals of a bad worker count or retry count, and a job's resources
(more than 0 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kwta_robust.sweep.executors.pool as pool_module
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.sweep import Resources, create_executor
from test_runtime import restore_threads  # noqa: F401 - a fixture


def worker_threads(_job: object) -> int:
    """What a pool worker runs: its torch thread count."""
    return torch.get_num_threads()


def test_pool_workers_get_the_drivers_threads_whatever_the_cores(restore_threads, monkeypatch) -> None:
    # pool.py: "each with the driver's torch thread count ..., as the in-line and Ray executors"
    torch.set_num_threads(3)  # the driver's (restore_threads puts the caller's count back)
    monkeypatch.setattr(pool_module, "cpu_count", lambda: 2)
    pool = create_executor("pool", 2)
    counts = [c.result for c in pool.map_unordered(worker_threads, [0])]  # one job: one process is spawned
    assert counts == [3]  # the worker really runs the driver's 3 threads on 2 cores (it ran 2 when capped)
    for cores, workers in ((16, 2), (4, 2), (3, 2), (2, 4)):  # the cap gave 3, 2, 1, 1
        monkeypatch.setattr(pool_module, "cpu_count", lambda cores=cores: cores)
        started = pool._start(workers)  # no process is spawned before a job is submitted
        assert started._initargs[0] == 3, (cores, workers)
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


def test_a_job_needs_more_than_zero_cores() -> None:
    assert Resources(cpus=0.5) == Resources(cpus=0.5, gpus=0.0)
    with pytest.raises(ConfigError, match=r"^resources: need cpus > 0 and gpus >= 0, got cpus=0, gpus=0.0$"):
        Resources(cpus=0)
