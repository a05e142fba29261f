"""``inline``: one job after the other in the driver's process (progress bars and ``KeyboardInterrupt`` behave as
usual; torch keeps the driver's thread count)."""

from __future__ import annotations

import logging
from typing import Callable, Iterator, Sequence

from kwta_robust.sweep.executors.base import EXECUTORS, Completion, Executor, J, R, Resources

logger = logging.getLogger(__name__)


@EXECUTORS.register("inline")
class InlineExecutor(Executor):
    """every cell in this process, one after the other"""

    name = "inline"

    def __init__(self, workers: int = 1) -> None:
        if workers != 1:
            logger.warning("the inline executor runs one job at a time in this process: %s workers asked, 1 used "
                           "(local or pool run several processes)", workers)
        super().__init__(1)

    def map_unordered(self, fn: Callable[[J], R], jobs: Sequence[J], *,
                      resources: Callable[[J], Resources] | None = None) -> Iterator[Completion[J, R]]:
        for job in jobs:
            yield Completion(job, fn(job))
