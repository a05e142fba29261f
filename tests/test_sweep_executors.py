"""Sweep executors as plug-ins: the registry, the local process pool (every job's result or error, a session that
keeps its workers and replaces a broken pool)."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest

import kwta_robust.sweep as sweep
from kwta_robust.errors import ConfigError


def test_executor_registry_and_workers(caplog: pytest.LogCaptureFixture) -> None:
    assert sweep.create_executor("local", 1).name == "inline"
    assert sweep.create_executor("inline", 3).workers == 1  # one job at a time, and it says so
    assert any("the inline executor runs one job at a time in this process: 3 workers asked, 1 used" in r.getMessage()
               for r in caplog.records)
    pool = sweep.create_executor("local", 2)
    assert pool.name == "pool" and pool.workers == 2
    assert sweep.resolve_workers("auto") == sweep.cpu_count()
    with pytest.raises(ConfigError, match="executor.name: unknown executor 'slurm'"):
        sweep.create_executor("slurm")
    assert "local" in sweep.available_executors()


def test_process_pool_executor_yields_every_job() -> None:
    pool = sweep.create_executor("local", 2)
    completions = list(pool.map_unordered(int, ["1", "x", "3"]))  # int("x") raises in the worker
    assert sorted(c.job for c in completions) == ["1", "3", "x"]
    assert {c.job: c.result for c in completions if c.error is None} == {"1": 1, "3": 3}
    (bad,) = [c for c in completions if c.error is not None]
    assert bad.job == "x" and bad.error.startswith("ValueError: invalid literal for int()")


def _exit_worker(code: int) -> None:
    os._exit(code)  # a worker that dies (as if killed)


def test_a_pool_session_keeps_its_workers_and_replaces_a_broken_pool() -> None:
    pool = sweep.create_executor("local", 2)
    with multiprocessing.Manager() as manager, pool.session(os.getpid):
        together = manager.Barrier(2, timeout=120)  # one job per worker, however slowly the second one starts
        first = {c.result for c in pool.map_unordered(_pid_together, [together] * 2)}
        second = {c.result for c in pool.map_unordered(_pid_together, [together] * 2)}
        assert len(first) == 2 and second == first and os.getpid() not in first  # the same two processes
        (dead,) = list(pool.map_unordered(_exit_worker, [3]))
        assert dead.error is not None and dead.error.startswith("BrokenProcessPool")
        assert [c.result for c in pool.map_unordered(int, ["7"])] == [7]  # a new pool for the rest of the session
    assert pool._pool is None  # shut down with the session


def _pid_together(barrier: Any) -> int:
    """The worker's pid, once the other job is running too: two jobs that wait for each other run in two processes
    (a fixed sleep did not ensure it on a loaded machine, where one worker took both jobs before the second one
    had started)."""
    barrier.wait()
    return os.getpid()
