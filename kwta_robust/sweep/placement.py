"""Where a sweep's cells run: the ``executor:`` section of a sweep config beyond ``name`` and ``workers``.

One thread policy on every executor: a cell trains with ``train.threads`` torch threads and evaluates with the
driver's (the ``--threads`` policy, :mod:`kwta_robust.runtime`), in-line, in a pool worker or in a Ray task alike,
so a cell's numbers and recorded thread counts do not depend on where it runs. ``cpus_per_cell`` /
``gpus_per_cell`` are the driver's: they override what each cell reserves — by default as many cores as it runs
threads (the larger of the driver's count and ``train.threads``) and one GPU when the cell runs on CUDA
(:meth:`~kwta_robust.sweep.plans.CellPlan.resources`) — and are only accepted by executors that reserve resources
per job (``ray``). An override reserves cores and changes no thread count (fewer cores than threads lets Ray place
more threads on a node than it has cores). Every other key is an option of the
executor's factory (``ray``: ``address``, ``max_retries``), checked against the options it takes::

    executor: {name: ray, workers: 8, address: auto, cpus_per_cell: 2, gpus_per_cell: 1, max_retries: 3}
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import torch

from kwta_robust.errors import ConfigError, is_finite_number
from kwta_robust.sweep.executors import Executor, Resources, create_executor

#: The driver's keys of the ``executor:`` section (all others go to the executor's factory).
RESOURCE_KEYS: tuple[str, ...] = ("cpus_per_cell", "gpus_per_cell")


def factory_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options passed to the executor's factory (``options`` minus :data:`RESOURCE_KEYS`)."""
    return {k: v for k, v in options.items() if k not in RESOURCE_KEYS}


def build_executor(name: str, workers: int | str, options: Mapping[str, Any]) -> Executor:
    """The executor of a sweep config (nothing starts yet), with its resource overrides checked."""
    executor = create_executor(name, workers, **factory_options(options))
    for key in RESOURCE_KEYS:
        if options.get(key) is None:
            continue
        if not executor.reserves_resources:
            raise ConfigError(f"executor.{key}: the {name!r} executor does not reserve resources per cell (use "
                              "executor.name: ray); torch threads are --threads (evaluation) and "
                              "train.threads (training) on every executor")
        _resource(options[key], key)
    return executor


def _resource(value: Any, key: str) -> float:
    """A core count (> 0) or GPU count (>= 0; fractions share a GPU) from the config."""
    positive = key == "cpus_per_cell"
    if not (is_finite_number(value) and (value > 0 if positive else value >= 0)):
        raise ConfigError(f"executor.{key}: expected a finite number {'>' if positive else '>='} 0, got {value!r}")
    return float(value)


def cell_resources(options: Mapping[str, Any]) -> Callable[[Any], Resources]:
    """``resources(plan)`` for the executor: the config's overrides, else as many cores as the cell runs threads
    (the driver's torch threads, at least the plan's own ``train.threads``) and the plan's GPUs."""
    cpus, gpus = (options.get(k) for k in RESOURCE_KEYS)
    return functools.partial(_overridden, cpus=None if cpus is None else float(cpus),
                             gpus=None if gpus is None else float(gpus), threads=torch.get_num_threads())


def _overridden(plan: Any, *, cpus: float | None, gpus: float | None, threads: int) -> Resources:
    asked = plan.resources()
    return Resources(cpus=max(asked.cpus, float(threads)) if cpus is None else cpus,
                     gpus=asked.gpus if gpus is None else gpus)
