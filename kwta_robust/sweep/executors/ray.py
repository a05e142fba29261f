"""``ray``: every job a Ray task (https://docs.ray.io), on this machine or on a Ray cluster.

Install the extra first: ``pip install -e ".[ray]"``; without Ray, choosing this executor is one ``error:`` line
saying so. Ray is imported here only when the executor is created, so the rest of the package never needs it.

* **Where**: ``address=None`` uses the Ray this process is connected to, else starts a local one with this
  machine's cores and GPUs (``RAY_ADDRESS`` in the environment connects to that cluster instead, as ``ray.init``
  does); ``address="auto"`` joins the cluster started on this node with ``ray start --head``; ``HOST:PORT`` joins
  that cluster's head. A Ray started here is shut down when the jobs are done (:func:`shutdown_started_ray`: no
  Ray process is left behind, and the autoscaler monitor a one-node Ray has no use for is stopped first, which
  saves the second ``ray.shutdown`` would otherwise wait for it).
* **Resources**: each job is a task declaring ``num_cpus``/``num_gpus`` from ``resources(job)``
  (:class:`~kwta_robust.sweep.executors.base.Resources`); Ray starts it on a node where they are free and never
  runs more tasks on a node than its cores and GPUs hold. Inside the task torch uses the driver's thread count
  (the ``--threads`` policy of :mod:`kwta_robust.runtime`, as the in-line and pool executors do: the same job gives
  the same numbers on every executor), whatever the cores reserved, and the GPUs Ray assigned
  (``CUDA_VISIBLE_DEVICES``); ``resources(job)`` should reserve at least the threads the job runs.
* **Concurrency**: at most ``workers`` jobs are submitted at once; the next goes out as one finishes.
* **Sessions**: ``with executor.session(warm_up):`` connects (or starts Ray) once for every ``map_unordered`` in
  the block and sends ``warm_up`` to ``workers`` workers at once (their imports happen while the driver works);
  without a session each call connects, and shuts down a Ray it started, on its own.
* **Faults**: a task whose worker process or node dies is run again by Ray up to ``max_retries`` times (default
  3); the job's own exceptions are never retried here (the sweep's ``run_cell`` turns them into failed outcomes
  that the next run retries). A job still failing after the retries comes back as ``Completion(job, error=...)``.
* **Interruption**: closing the generator (Ctrl-C in the driver) cancels the outstanding tasks (``force``: their
  workers are killed; finished work is on disk already, written atomically). A driver killed outright takes its
  tasks with it (Ray ends the tasks of a job whose driver died).
* **Logs**: each task logs at the driver's level to its worker's stderr, which Ray forwards to the driver's
  terminal prefixed with the task's name (the cell's label) and pid; the full worker logs stay in Ray's session
  folder (``/tmp/ray/session_latest/logs`` on each node). Where the driver's output is not a terminal (a log file,
  a pipe), the prefixes come without Ray's colour codes (:func:`plain_prefixes_off_terminal`). Ray collapses
  lines that differ only in their numbers (``[repeated 3x across cluster]``, a summary it always colours);
  ``RAY_DEDUP_LOGS=0`` in the environment shows every line.

The jobs and ``fn`` are shipped by Ray (pickled): ``fn`` must be importable on every node (a module-level
function of an installed package), and paths inside the jobs must name the same files on every node (shared
storage mounted under the same absolute path).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Callable, Iterator, Sequence

import torch

from kwta_robust.errors import ConfigError, is_whole_number
from kwta_robust.heap import retain_freed_memory
from kwta_robust.sweep.executors.base import EXECUTORS, Completion, Executor, J, R, Resources, one_line

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[ray]"'
DEFAULT_MAX_RETRIES = 3
#: Seconds between checks for finished tasks (keeps the driver responsive to Ctrl-C).
WAIT_S = 0.5
#: Cancellation: rounds of ``ray.cancel`` and seconds to wait for the tasks to end after each.
CANCEL_ROUNDS = 5
CANCEL_WAIT_S = 2.0


def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"executor.name: 'ray' needs Ray, which is not installed; install the extra with "
                          f"{INSTALL_HINT} (from the repository root) or pip install 'ray>=2.9'") from None
    return ray


def shutdown_started_ray(ray: Any) -> None:
    """``ray.shutdown()`` of the Ray this process started, without its one-second wait for the autoscaler monitor.

    ``ray.shutdown`` stops the node's processes one after the other — the raylet (and with it the workers), the GCS,
    then the others — sending each SIGTERM and waiting up to a second before SIGKILL. The autoscaler monitor's
    SIGTERM handler reports its end to the GCS, which is gone by then, so the monitor always takes the whole second
    and is killed anyway (measured: shutdown 1.3-1.6 s, 0.33 s with the monitor stopped first). A Ray started by
    ``ray.init`` is one node with nothing to autoscale, so the monitor is killed first, through Ray's own
    ``Node.kill_monitor`` (SIGKILL, then up to a second for the process to go); then ``ray.shutdown`` stops the rest
    as before. Where a Ray version lacks that hook, or it fails, only the second is lost: ``ray.shutdown`` still
    stops the monitor. A driver that joined a running cluster holds no process of it (Ray's node object for it is
    connect-only), so there this kills nothing and only disconnects.
    """
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    kill_monitor = getattr(node, "kill_monitor", None)
    if callable(kill_monitor):
        try:
            kill_monitor(check_alive=False)
        except Exception as exc:  # noqa: BLE001 - a shortcut only: ray.shutdown below stops the monitor anyway
            logger.debug("Ray: the autoscaler monitor was left to ray.shutdown (%s)", one_line(exc))
    ray.shutdown()


@contextlib.contextmanager
def plain_prefixes_off_terminal() -> Iterator[None]:
    """Run the block with ``RAY_COLOR_PREFIX=0`` where the driver's stdout or stderr is not a terminal, then put the
    variable back: Ray otherwise wraps every forwarded worker line's ``(name pid=...)`` prefix in ANSI colour codes,
    which a log file keeps as ``ESC[36m`` noise. A value the user set is left as it is."""
    name = "RAY_COLOR_PREFIX"
    on_terminal = all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))
    if on_terminal or name in os.environ:
        yield
        return
    os.environ[name] = "0"
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _run_job(fn: Callable[[J], R], job: J, threads: int, log_level: int) -> R:
    """What a Ray worker runs: the commands' heap policy (:mod:`kwta_robust.heap`), the driver's torch thread count
    (not the cores reserved: a cell's numbers must not depend on where it runs), logging at the driver's level, then
    ``fn(job)``."""
    retain_freed_memory()
    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s", force=True)
    return fn(job)


def _check_options(address: Any, max_retries: Any) -> None:
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ConfigError(f"executor.address: expected 'auto' or HOST:PORT of a Ray head node, got {address!r}")
    if not is_whole_number(max_retries, 0):
        raise ConfigError(f"executor.max_retries: expected an integer >= 0 (retries of a task whose worker died), "
                          f"got {max_retries!r}")


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Ray tasks on this machine or a Ray cluster (pip install -e ".[ray]")"""

    name = "ray"
    remote = True
    reserves_resources = True

    def __init__(self, workers: int = 1, *, address: str | None = None,
                 max_retries: int = DEFAULT_MAX_RETRIES) -> None:
        _check_options(address, max_retries)
        super().__init__(workers)
        self.address = address
        self.max_retries = max_retries
        self.ray = import_ray()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "address": self.address, "max_retries": self.max_retries}

    def _connect(self) -> bool:
        """Connect to (or start) Ray unless this process is connected already; ``True`` when this call did."""
        ray = self.ray
        if ray.is_initialized():
            return False
        try:
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "a local Ray" if self.address is None else f"the Ray cluster at {self.address!r}"
            raise ConfigError(f"ray: cannot start or reach {where} ({one_line(exc)}); start the head with 'ray "
                              "start --head' and pass --ray-address auto or HOST:PORT (executor.address in a sweep "
                              "config)") from None
        resources = ray.cluster_resources()
        logger.info("Ray at %s: %g CPUs, %g GPUs", ray.get_runtime_context().gcs_address, resources.get("CPU", 0),
                    resources.get("GPU", 0))
        return True

    @contextlib.contextmanager
    def session(self, warm_up: Callable[[], Any] | None = None) -> Iterator["RayExecutor"]:
        """Connect to (or start) Ray now, send ``warm_up`` to ``workers`` workers (imports ahead of the first job),
        and stay connected for every :meth:`map_unordered` in the block; a Ray started here is shut down after it."""
        with plain_prefixes_off_terminal():
            started = self._connect()
            try:
                if warm_up is not None:
                    task = self.ray.remote(warm_up)
                    for _ in range(self.workers):
                        task.options(num_cpus=1, name="kwta-robust warm-up").remote()
                yield self
            finally:
                if started:
                    shutdown_started_ray(self.ray)

    def map_unordered(self, fn: Callable[[J], R], jobs: Sequence[J], *,
                      resources: Callable[[J], Resources] | None = None) -> Iterator[Completion[J, R]]:
        if not jobs:
            return
        with plain_prefixes_off_terminal():
            yield from self._map(fn, jobs, resources)

    def _map(self, fn: Callable[[J], R], jobs: Sequence[J],
             resources: Callable[[J], Resources] | None) -> Iterator[Completion[J, R]]:
        ray = self.ray
        started = self._connect()
        task = ray.remote(_run_job)
        level = logging.getLogger().getEffectiveLevel()
        threads = torch.get_num_threads()  # the in-line run's count, in every task
        waiting = iter(jobs)
        pending: dict[Any, J] = {}

        def submit() -> None:
            job = next(waiting, None)
            if job is None:
                return
            need = resources(job) if resources is not None else Resources()
            ref = task.options(num_cpus=need.cpus, num_gpus=need.gpus, max_retries=self.max_retries,
                               retry_exceptions=False, name=str(getattr(job, "label", "") or "kwta-robust job"),
                               ).remote(fn, job, threads, level)
            pending[ref] = job

        try:
            for _ in range(self.workers):
                submit()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    job = pending.pop(ref)
                    submit()  # keep the cluster busy while the driver records this one
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a job that could not run is an outcome, not fatal
                        yield Completion(job, error=self._failure(exc))
                    else:
                        yield Completion(job, result)
        finally:
            self._cancel(list(pending))  # closed early (Ctrl-C, an error in the driver): stop what still runs
            if started:
                shutdown_started_ray(ray)

    def _cancel(self, refs: list[Any], rounds: int = CANCEL_ROUNDS) -> None:
        """Cancel ``refs`` (``force``: kill their workers) and wait until Ray reports them ended; a task caught
        between being queued and starting can miss a cancellation, so it is sent again (``rounds`` at most)."""
        for _ in range(rounds):
            if not refs:
                return
            for ref in refs:
                self.ray.cancel(ref, force=True)
            _, refs = self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
        if refs:
            logger.warning("Ray: %d cancelled task(s) still running; they end with the Ray session", len(refs))

    def _failure(self, exc: BaseException) -> str:
        """One line for a task that did not return: the job's own exception, or why Ray gave up on it."""
        cause = getattr(exc, "cause", None)  # RayTaskError wraps the exception the job raised
        if isinstance(cause, BaseException):
            return one_line(cause)
        if isinstance(exc, (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.NodeDiedError)):
            return f"{one_line(exc)} (Ray gave up after {self.max_retries} retries)"
        return one_line(exc)
