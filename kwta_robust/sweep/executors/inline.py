"""``inline``: one job after the other in the driver's process (progress bars and ``KeyboardInterrupt`` behave as
usual; torch keeps the driver's thread count)."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

from kwta_robust.sweep.executors.base import EXECUTORS, Completion, Executor, J, R, Resources


@EXECUTORS.register("inline")
class InlineExecutor(Executor):
    """every cell in this process, one after the other"""

    name = "inline"

    def __init__(self, workers: int = 1) -> None:
        super().__init__(1)

    def map_unordered(self, fn: Callable[[J], R], jobs: Sequence[J], *,
                      resources: Callable[[J], Resources] | None = None) -> Iterator[Completion[J, R]]:
        for job in jobs:
            yield Completion(job, fn(job))
