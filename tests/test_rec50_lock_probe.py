"""``holder_of`` (a dry run's check of its outputs, ``read_manifest``, tests/test_locks.py's wait for an evaluation
to lock its record) tells whether a lock is held by taking it shared for the length of its probe. A run locking its
output at that moment found it taken, by no one named, and failed at once: ``--out: ... is in use by another
kwta-robust run (another process)``; on a loaded machine the probe's hold stretches. A lock file that names no holder
is now tried again for as long as its holder's details are waited for (``locks.LOCK_PATIENCE``); one that names a
holder still fails at once, naming it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import pytest

from kwta_robust import locks
from kwta_robust.locks import LockError, OutputLock, lock_path


def test_a_run_locking_while_a_probe_looks_takes_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "rec.json"
    probe = os.open(lock_path(target), os.O_RDWR | os.O_CREAT, 0o644)  # as holder_of probes: shared, briefly
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    reads: list[int] = []
    read_holder = locks._read_holder

    def probe_ends(fd: int, *args: Any, **kwargs: Any) -> Any:  # the probe lets go as the run reads the lock file
        if not reads:
            os.close(probe)
        reads.append(fd)
        return read_holder(fd, *args, **kwargs)

    monkeypatch.setattr(locks, "_read_holder", probe_ends)
    lock = OutputLock(target, "--out").acquire()  # session 49: LockError "... in use by ... (another process)"
    try:
        assert reads and lock.fd is not None and lock_path(target).read_text().startswith("{")
    finally:
        lock.release()
    assert not lock_path(target).exists()
    monkeypatch.undo()
    with OutputLock(target, "--out"):  # a lock a run holds still fails at once, naming it
        with pytest.raises(LockError, match=rf"--out: .*rec\.json is in use by another kwta-robust run \(pid "
                                            rf"{os.getpid()} on "):
            OutputLock(target, "--out").acquire()
