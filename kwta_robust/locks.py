"""Exclusive locks on outputs, so that two runs never write the same record, checkpoint or sweep folder.

A lock is a ``<output>.lock`` file next to the output, locked with ``fcntl.flock`` for the whole run and holding
who locked it (pid, host, start time, command). A second run on the same output fails at once with one line naming
that holder; the first run's output is untouched.

Stale locks need no clean-up: the kernel releases a ``flock`` when its process dies (kill -9 included), so the
``.lock`` file a killed run leaves behind is free and the next run takes it over (logs whose it was and removes the
temp files of the output that run was writing when it died). Lock files are removed on release; the inode check
in :meth:`OutputLock.acquire` keeps that race-free (a run that locked a file another run was removing retries on the
new one).

POSIX only: on a platform without ``fcntl`` importing this module works, and using a lock raises a one-line
:class:`LockError`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Iterator, Mapping

from kwta_robust.errors import KwtaRobustError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
#: How many times a lock that names no holder is tried again (after 0.05, 0.1, 0.15 s): :meth:`OutputLock.acquire`.
LOCK_PATIENCE = 3


class LockError(KwtaRobustError):
    """The output is locked by another run (or locks are not supported here)."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a lock."""

    pid: int | None
    host: str
    started_at: str
    command: str

    def describe(self) -> str:
        pid = f"pid {self.pid}" if self.pid is not None else "an unknown process"
        return f"{pid} on host {self.host or '?'} since {self.started_at or '?'}" + \
            (f": {self.command}" if self.command else "")

    def is_dead_here(self) -> bool:
        """The holder ran on this host and its process no longer exists."""
        if self.pid is None or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def lock_path(target: str | Path) -> Path:
    """The lock file of ``target``: ``<target>.lock`` in the same folder."""
    target = Path(target)
    return target.with_name(target.name + LOCK_SUFFIX)


def _read_holder(fd: int, patience: int = 0) -> LockHolder | None:
    """The details in a lock file; ``patience`` retries give a holder that has just locked time to write them."""
    for attempt in range(patience + 1):
        text = os.pread(fd, 65536, 0).decode("utf-8", "replace").strip()
        if text or attempt == patience:
            break
        time.sleep(0.05 * (attempt + 1))
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    return LockHolder(pid if isinstance(pid, int) else None, str(data.get("host") or ""),
                      str(data.get("started_at") or ""), str(data.get("command") or "")[:300])


def remove_temp_files(target: str | Path) -> list[Path]:
    """Remove the temp files of ``target`` that a run killed while writing it left behind (``.<name>.XXXXXXXX.tmp``,
    what :func:`kwta_robust.results.atomic_write` writes before its rename) and return them. Only safe for the
    holder of ``target``'s lock: every writer of ``target`` holds it, so they belong to a run that is gone."""
    target = Path(target)
    removed = []
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.????????.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _require_fcntl(where: str) -> None:
    if fcntl is None:
        raise LockError(f"{where}: output locks need POSIX file locking (fcntl), which this platform lacks; "
                        "run kwta-robust on Linux or macOS")


class OutputLock:
    """An exclusive lock on ``target`` for as long as the ``with`` block (or until :meth:`release`).

    ``where`` names the option in messages (``--out``, ``--out-dir``)."""

    def __init__(self, target: str | Path, where: str = "output") -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self.where = where
        self.fd: int | None = None

    def acquire(self) -> "OutputLock":
        _require_fcntl(self.where)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = self._open()
            try:
                self._lock(fd)
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed this file while we waited for it: lock the new one
        previous = _read_holder(fd)
        if previous is not None:
            removed = remove_temp_files(self.target)
            logger.warning("%s %s: taking over the lock left by %s (that run ended without releasing it%s)",
                           self.where, self.target, previous.describe(),
                           f"; removed the {len(removed)} temp file(s) it was writing" if removed else "")
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)[:1000], "target": str(self.target)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self.fd = fd
        return self

    def _lock(self, fd: int) -> None:
        """``flock`` the open lock file ``fd`` exclusively, or the :class:`LockError` naming its holder. While the
        file names none, it is tried again (:data:`LOCK_PATIENCE`): a run that has just locked it writes its details
        next, and :func:`holder_of` locks it shared for as long as its probe takes, which a loaded machine stretches
        (a run starting then failed with "in use by another process": a dry run's check, tests/test_locks.py's
        wait for its evaluation to lock its record)."""
        for attempt in range(LOCK_PATIENCE + 1):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                holder = _read_holder(fd)
                if holder is not None or attempt == LOCK_PATIENCE:
                    raise LockError(self._busy_message(holder)) from None
            time.sleep(0.05 * (attempt + 1))

    def _open(self) -> int:
        """The lock file, opened (created where missing; not inherited by child processes); a path there that is
        no file to lock (a folder, a link to a missing folder) is one line naming it."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except (IsADirectoryError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            raise LockError(f"{self.where}: cannot open the lock file {self.path} of {self.target} ({exc.strerror}); "
                            "remove what is at that path or choose another output") from None

    def _busy_message(self, holder: LockHolder | None) -> str:
        who = holder.describe() if holder is not None else "another process"
        gone = " (that process is gone; a process it started still holds the lock)" \
            if holder is not None and holder.is_dead_here() else ""
        return (f"{self.where}: {self.target} is in use by another kwta-robust run ({who}){gone}; wait for it to "
                f"finish or choose another path")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked: a waiting run notices the inode change and retries
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


@contextlib.contextmanager
def lock_outputs(targets: Mapping[str, str | Path | None]) -> Iterator[None]:
    """Hold an :class:`OutputLock` on every given output (``{where: path}``; ``None`` paths are skipped)."""
    with contextlib.ExitStack() as stack:
        for where, target in targets.items():
            if target is not None and str(target) != "":
                stack.enter_context(OutputLock(target, where))
        yield


def holder_of(target: str | Path) -> LockHolder | None:
    """Who holds the lock on ``target`` right now (``None``: nobody; the output is free)."""
    path = lock_path(target)
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd, patience=3) or LockHolder(None, "", "", "")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_free(targets: Mapping[str, str | Path | None]) -> None:
    """Raise the :class:`LockError` :func:`lock_outputs` would raise for these outputs (``{where: path}``) while
    another run holds one, without taking or creating any lock (``evaluate --dry-run``)."""
    for where, target in targets.items():
        if target is None or str(target) == "":
            continue
        holder = holder_of(target)
        if holder is not None:  # a holder that wrote nothing yet reads as "another process", as in acquire()
            unknown = holder.pid is None and not holder.host
            raise LockError(OutputLock(target, where)._busy_message(None if unknown else holder))
