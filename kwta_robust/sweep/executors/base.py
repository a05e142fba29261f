"""The executor interface: how a sweep's cells run, behind one method.

An :class:`Executor` runs a module-level function ``fn`` over plain-data jobs (a sweep's jobs are
:class:`~kwta_robust.sweep.plans.CellPlan` s, JSON-able with absolute paths) and yields a :class:`Completion` per
job as each finishes, in any order. The division of work a distributed backend (Ray, a cluster queue) relies on:

* **the driver owns the state** — the manifest, the folder lock, the retry policy (a failed cell is recorded and
  run again by the next ``kwta-robust sweep``) and the order of reporting; an executor only runs jobs;
* **failures are outcomes** — ``fn`` turns every exception of a job into a failed result, and a job that could
  not run at all (a worker died, the job could not be shipped) comes back as ``Completion(job, error=...)``;
  nothing an executor yields stops the sweep;
* **resources per job** — ``resources(job)`` says what one job needs (:class:`Resources`: CPU cores for torch's
  threads, GPUs); local executors place jobs by their own worker count, a cluster backend reserves it per job;
* **interruption** — closing the generator early (``KeyboardInterrupt`` in the driver) must stop or abandon the
  outstanding jobs; finished work is on disk already (written atomically);
* **sessions** — ``with executor.session(warm_up):`` starts the workers (and a backend's connection) at once and
  keeps them for every ``map_unordered`` inside the block: a driver that sends several rounds of jobs starts its
  workers once, while it still works on its own, and each worker imports what its jobs need once (``warm_up``,
  a module-level function, runs on each worker as it starts). Without a session each call starts its own.

Executors are registered by name in :data:`EXECUTORS` (a generic :class:`~kwta_robust.registry.Registry`):
the built-ins are the modules of :mod:`kwta_robust.sweep.executors` (one file each), third-party ones come
through the entry point group ``kwta_robust.executors``. A registered object is called as
``factory(workers, **options)`` and returns an :class:`Executor`.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Generic, Iterator, Sequence, TypeVar

from kwta_robust.errors import ConfigError, KwtaRobustError, is_whole_number
from kwta_robust.registry import Registry

J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True)
class Resources:
    """What one job needs: ``cpus`` cores (torch threads) and ``gpus`` devices (fractions where a backend can
    share one, as Ray does)."""

    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if not self.cpus > 0 or self.gpus < 0:
            raise ConfigError(f"resources: need cpus > 0 and gpus >= 0, got cpus={self.cpus}, gpus={self.gpus}")

    def to_dict(self) -> dict[str, float]:
        return {"cpus": self.cpus, "gpus": self.gpus}


@dataclass
class Completion(Generic[J, R]):
    """A finished job: ``result`` of ``fn(job)``, or ``error`` (one line) when the job could not run at all
    (a worker process died, the job could not be shipped)."""

    job: J
    result: R | None = None
    error: str | None = None


class Executor:
    """Runs ``fn`` over ``jobs`` (see the module docstring); subclass it and register the subclass."""

    name: ClassVar[str] = ""
    #: jobs run outside this process (their progress bars would not be seen; logs come back through the backend)
    remote: ClassVar[bool] = False
    #: each job is placed by its :class:`Resources` (a cluster backend); local executors place by worker count
    reserves_resources: ClassVar[bool] = False

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def map_unordered(self, fn: Callable[[J], R], jobs: Sequence[J], *,
                      resources: Callable[[J], Resources] | None = None) -> Iterator[Completion[J, R]]:
        """Yield a :class:`Completion` per job of ``jobs`` as each finishes (any order)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def session(self, warm_up: Callable[[], Any] | None = None) -> Iterator["Executor"]:
        """Start the workers now and keep them for every :meth:`map_unordered` in the block (see the module
        docstring); executors without workers of their own start nothing."""
        yield self

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the executor."""
        return {"name": self.name, "workers": self.workers}


ExecutorFactory = Callable[..., Executor]

#: Executors by name: built-ins are this package's modules, plug-ins come through the entry point group
#: ``kwta_robust.executors`` (an :class:`Executor` subclass or factory, or a module registering one).
EXECUTORS: Registry[ExecutorFactory] = Registry("executor", field="executor.name",
                                                plugins=("kwta_robust.sweep.executors",),
                                                entry_point_group="kwta_robust.executors")


def register_executor(name: str, factory: ExecutorFactory | None = None) -> Any:
    """Add a backend: ``factory(workers, **options) -> Executor``; without ``factory`` a decorator."""
    return EXECUTORS.register(name) if factory is None else EXECUTORS.register(name, factory)


def available_executors() -> list[str]:
    """Names of the registered sweep executors."""
    return EXECUTORS.names()


def create_executor(name: str = "local", workers: int | str = 1, **options: Any) -> Executor:
    """The executor registered as ``name`` with ``workers`` (an integer >= 1 or ``auto``) and its options
    (an option the factory does not take is a one-line :class:`ConfigError` listing those it takes)."""
    factory = EXECUTORS.get(name)
    known = executor_options(factory)
    if known is not None:
        for key in options:
            if key not in known:
                takes = f"its options: {', '.join(known)}" if known else "it takes none"
                raise ConfigError(f"executor.{key}: the {name!r} executor takes no option {key!r}; {takes}")
    return factory(resolve_workers(workers), **options)


def executor_options(factory: ExecutorFactory) -> list[str] | None:
    """The keyword options ``factory`` takes after its first argument (the worker count); ``None``: any (it has
    ``**options``)."""
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters[1:] if p.kind in keyword]


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | str) -> int:
    """``auto`` → one per core; else an integer >= 1."""
    if workers == "auto":
        return cpu_count()
    if isinstance(workers, str) and workers.isdigit():
        workers = int(workers)
    if not is_whole_number(workers, 1):
        raise ConfigError(f"executor.workers: expected an integer >= 1 or 'auto', got {workers!r}")
    return workers


def one_line(exc: BaseException) -> str:
    """An exception as one line: a user error's own message, else ``Type: first line``."""
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(exc, KwtaRobustError):
        return message or type(exc).__name__
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
