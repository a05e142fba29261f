"""Sweep executors: one module per backend behind one interface (:mod:`.base`), registered by name in
:data:`EXECUTORS` and found as plug-ins (this package's modules; the entry point group ``kwta_robust.executors``).

Built-ins: ``local`` (the default: ``inline`` for one worker, ``pool`` for several), ``inline``, ``pool`` and
``ray`` (Ray tasks on this machine or a cluster; needs the ``ray`` extra, imported only when chosen).
"""

from kwta_robust.sweep.executors.base import (
    EXECUTORS,
    Completion,
    Executor,
    ExecutorFactory,
    Resources,
    available_executors,
    cpu_count,
    create_executor,
    executor_options,
    one_line,
    register_executor,
    resolve_workers,
)

__all__ = [
    "EXECUTORS", "Completion", "Executor", "ExecutorFactory", "Resources", "available_executors", "cpu_count",
    "create_executor", "executor_options", "one_line", "register_executor", "resolve_workers",
]
