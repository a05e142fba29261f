"""``pool``: a local process pool (``spawn``), up to ``workers`` processes, each with the driver's torch thread count
(the ``--threads`` policy of :mod:`kwta_robust.runtime`, default 1), as the in-line and Ray executors: a job's
numbers do not depend on the executor or the machine's core count. Where the threads exceed ``cores // processes``,
a warning says so (the run is slower, its numbers are the same); lower ``--threads`` or the worker count.

Workers ignore SIGINT; on Ctrl-C (or SIGTERM) the driver cancels the queued jobs and terminates the running
ones, then re-raises ``KeyboardInterrupt``. A driver killed outright takes its workers with it
(:func:`~kwta_robust.parent_watch.die_with_parent`). A job whose worker died comes back as a failed
:class:`~kwta_robust.sweep.executors.base.Completion`, never as an exception that stops the sweep. In a
:meth:`~PoolExecutor.session` the processes are spawned at once (each runs the warm-up as it starts) and serve every
``map_unordered`` of the block; a pool broken by a dead worker is replaced by the next call, and the idle workers
are told to exit when the block ends (the driver does not wait for them).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm import tqdm

from kwta_robust.errors import ConfigError
from kwta_robust.heap import retain_freed_memory
from kwta_robust.parent_watch import die_with_parent
from kwta_robust.sweep.executors.base import EXECUTORS, Completion, Executor, J, R, Resources, cpu_count, one_line

logger = logging.getLogger(__name__)


def _init_worker(threads: int, level: int, parent: int | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops the workers
    # tqdm's first bar would create a multiprocessing lock, which a spawned process registers with the driver's
    # resource tracker; a worker the driver terminates never unregisters it, and the tracker then warns of "leaked
    # semaphore objects". A spawned worker's lock is its own anyway (not shared): a thread lock does the same.
    tqdm.set_lock(threading.RLock())
    die_with_parent(parent)  # a killed parent (kill -9) must not leave workers running
    retain_freed_memory()  # the heap policy of the commands (kwta_robust.heap)
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(levelname)s %(processName)s %(name)s: %(message)s")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _run_job(fn: Callable[[J], R], job: J) -> R:
    """``fn(job)`` in a worker. The driver stops a pool with SIGTERM (:func:`_stop_workers`); during a job it unwinds
    the job as Ctrl-C would, so its ``finally`` blocks release the output locks and remove the temp files it held
    (the default action would end the worker at once and leave them), and then ends the worker. An idle worker
    keeps the default: it just ends."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return fn(job)
    except KeyboardInterrupt:
        os._exit(128 + signal.SIGTERM)  # the pool is being stopped: no result to send, no next job to wait for
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel queued jobs and terminate running ones (their finished work is already on disk, atomically)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    processes = [] if terminate is not None else list((getattr(pool, "_processes", None) or {}).values())
    if terminate is not None:
        terminate()
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=30)


@EXECUTORS.register("pool")
class PoolExecutor(Executor):
    """a process pool on this machine (workers >= 2)"""

    name = "pool"

    def __init__(self, workers: int) -> None:
        if workers < 2:
            raise ConfigError(f"executor.workers: a process pool needs at least 2 workers, got {workers}")
        super().__init__(workers)
        self._pool: cf.ProcessPoolExecutor | None = None  # the session's pool (see session)

    def _start(self, workers: int) -> cf.ProcessPoolExecutor:
        # the thread policy: the in-line run's count in every worker, never capped (a cap would move the numbers)
        threads = torch.get_num_threads()
        if threads > max(1, cpu_count() // workers):
            logger.warning("%d pool workers x %d torch threads exceed this machine's %d cores: slower, same numbers "
                           "(lower --threads or the worker count)", workers, threads, cpu_count())
        return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker,
                                      initargs=(threads, logging.getLogger().level, os.getpid()))

    @contextlib.contextmanager
    def session(self, warm_up: Callable[[], Any] | None = None) -> Iterator["PoolExecutor"]:
        """Spawn the ``workers`` processes now (each runs ``warm_up`` as it starts) and keep them for every
        :meth:`map_unordered` in the block; a pool broken by a dead worker is replaced by the next call."""
        self._pool = self._start(self.workers)
        finished = False
        try:
            for _ in range(self.workers):
                self._pool.submit(warm_up or os.getpid)  # spawns a process per call, up to the worker count
            yield self
            finished = True
        finally:
            pool, self._pool = self._pool, None
            if pool is not None and finished:  # the idle workers exit on their own while the driver goes on
                pool.shutdown(wait=False)  # (the interpreter joins them at its exit)
            elif pool is not None:
                _stop_workers(pool)

    def map_unordered(self, fn: Callable[[J], R], jobs: Sequence[J], *,
                      resources: Callable[[J], Resources] | None = None) -> Iterator[Completion[J, R]]:
        if not jobs:
            return
        if self._pool is not None and getattr(self._pool, "_broken", False):  # a worker of the session died
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start(self.workers)
        pool = self._pool or self._start(min(self.workers, len(jobs)))
        own = pool is not self._pool
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
        finished = False
        try:
            futures = {pool.submit(_run_job, fn, job): job for job in jobs}
            for future in cf.as_completed(futures):
                job = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. BrokenProcessPool: reported per job, not fatal
                    yield Completion(job, error=one_line(exc))
                else:
                    yield Completion(job, result)
            finished = True
        finally:
            if not finished:
                _stop_workers(pool)
                if not own:
                    self._pool = None  # the session's pool is gone: a later call starts its own
            elif own:
                pool.shutdown(wait=True)
            if main_thread:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
