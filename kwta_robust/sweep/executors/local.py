"""``local`` (the default): this machine — :mod:`~kwta_robust.sweep.executors.inline` for one worker, a process
pool (:mod:`~kwta_robust.sweep.executors.pool`) for several."""

from __future__ import annotations

from kwta_robust.sweep.executors.base import EXECUTORS, Executor
from kwta_robust.sweep.executors.inline import InlineExecutor
from kwta_robust.sweep.executors.pool import PoolExecutor


@EXECUTORS.register("local")
def local_executor(workers: int = 1) -> Executor:
    """this machine: in-line for 1 worker, a process pool for more"""
    return InlineExecutor() if workers == 1 else PoolExecutor(workers)
