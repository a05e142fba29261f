"""Mutation round on kwta_robust.locks and kwta_robust.parent_watch: what a second run is told (the holder's
details, read from a lock file whatever it holds), which temp files a takeover removes, what a lock file holds
after a takeover, that release and empty paths leave nothing behind, the inode re-check, and that pool workers
set the kernel's death signal, end at once when their parent is gone and never keep their interpreter alive.

Locks held "by another run" are taken in this process through a second open file description (``flock`` locks
conflict between descriptions, not only between processes), so no test waits on a child process."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kwta_robust import locks
from kwta_robust.locks import LockError, LockHolder, OutputLock, check_free, holder_of, lock_outputs, lock_path
from kwta_robust.locks import remove_temp_files

from test_locks import ENV


def hold(target: Path, content: str | None) -> int:
    """Lock ``target``'s lock file through a descriptor of its own (as another run would), writing ``content``."""
    fd = os.open(lock_path(target), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if content is not None:
        os.write(fd, content.encode())
    return fd


def busy_message(target: Path) -> str:
    with pytest.raises(LockError) as caught:
        OutputLock(target, "--out").acquire()
    return str(caught.value)


def test_holder_details_of_any_content_read_as_the_spec_says(tmp_path) -> None:
    target = tmp_path / "rec.json"
    prefix = f"--out: {target} is in use by another kwta-robust run ("
    suffix = "; wait for it to finish or choose another path"
    cases = {
        "[1, 2]": "another process",  # JSON but not an object
        '{"pid": "12", "host": "h", "started_at": "t"}': "an unknown process on host h since t",  # pid not an int
        '{"pid": 7}': "pid 7 on host ? since ?",
        '{"pid": 7, "host": "h", "started_at": "t", "command": "' + "c" * 400 + '"}':
            "pid 7 on host h since t: " + "c" * 300,
    }
    for content, who in cases.items():
        fd = hold(target, content)
        assert busy_message(target) == prefix + who + ")" + suffix
        os.close(fd)
        lock_path(target).unlink()


def test_a_holder_that_wrote_nothing_yet_still_holds_the_output(tmp_path, monkeypatch) -> None:
    target = tmp_path / "rec.json"
    fd = hold(target, None)
    monkeypatch.setattr(locks.time, "sleep", lambda s: None)
    assert holder_of(target) == LockHolder(None, "", "", "")
    with pytest.raises(LockError, match=r"\(another process\); wait"):
        check_free({"--sweep": None, "--out": str(target)})
    os.close(fd)


def test_check_free_names_an_unknown_pid_with_its_host(tmp_path) -> None:
    target = tmp_path / "rec.json"
    fd = hold(target, '{"host": "h2", "started_at": "t"}')
    with pytest.raises(LockError, match=r"\(an unknown process on host h2 since t\); wait"):
        check_free({"--empty": "", "--out": target})
    os.close(fd)


def test_a_written_holder_is_read_without_waiting(tmp_path, monkeypatch) -> None:
    target = tmp_path / "rec.json"
    fd = hold(target, '{"pid": 5, "host": "h"}')
    sleeps: list[float] = []
    monkeypatch.setattr(locks.time, "sleep", sleeps.append)
    assert holder_of(target) == LockHolder(5, "h", "", "")
    assert sleeps == []
    os.close(fd)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_is_dead_here_and_the_gone_note(tmp_path, monkeypatch) -> None:
    here = socket.gethostname()
    gone = dead_pid()
    assert LockHolder(gone, here, "", "").is_dead_here()
    assert not LockHolder(gone, here + "-elsewhere", "", "").is_dead_here()
    assert not LockHolder(os.getpid(), here, "", "").is_dead_here()
    assert not LockHolder(None, here, "", "").is_dead_here()
    target = tmp_path / "rec.json"
    note = "(that process is gone; a process it started still holds the lock)"
    fd = hold(target, json.dumps({"pid": gone, "host": here}))
    assert note in busy_message(target)
    os.close(fd)
    lock_path(target).unlink()
    fd = hold(target, json.dumps({"pid": os.getpid(), "host": here}))
    assert note not in busy_message(target)
    os.close(fd)

    def refused(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(locks.os, "kill", refused)
    assert not LockHolder(gone, here, "", "").is_dead_here()


def test_a_refused_lock_leaves_no_open_descriptor(tmp_path) -> None:
    target = tmp_path / "rec.json"
    fd = hold(target, '{"pid": 3}')
    before = sorted(os.listdir("/proc/self/fd"))
    for _ in range(3):
        busy_message(target)
    assert sorted(os.listdir("/proc/self/fd")) == before
    os.close(fd)


def test_takeover_rewrites_the_whole_lock_file_and_logs_the_removed_temp_files(tmp_path, caplog) -> None:
    target = tmp_path / "new" / "deep" / "r[1].json"
    target.parent.mkdir(parents=True)
    stale = {"pid": 4242, "host": "old-host", "started_at": "then", "command": "x" * 3000}
    lock_path(target).write_text(json.dumps(stale))
    mine = target.parent / ".r[1].json.abcdefgh.tmp"
    others = [target.parent / ".r1.json.abcdefgh.tmp", target.parent / ".r[1].json.partial.tmp",
              target.parent / ".r[1].json.abc.tmp", target.parent / "r[1].json.abcdefgh.tmp"]
    for path in [mine, *others]:
        path.write_text("partial")
    with caplog.at_level(logging.WARNING, logger="kwta_robust.locks"):
        lock = OutputLock(target, "--out").acquire()
    assert "left by pid 4242 on host old-host since then" in caplog.text
    assert "removed the 1 temp file(s) it was writing" in caplog.text
    assert not mine.exists() and all(path.exists() for path in others)
    info = json.loads(lock_path(target).read_text())  # the 3000-character command is gone, not a JSON tail
    assert (info["pid"], info["host"], info["target"]) == (os.getpid(), socket.gethostname(), str(target))
    lock.release()
    assert not lock_path(target).exists()


def test_remove_temp_files_takes_exactly_eight_characters(tmp_path) -> None:
    target = tmp_path / "rec.json"
    names = [".rec.json.12345678.tmp", ".rec.json.1234567.tmp", ".rec.json.123456789.tmp", ".rec.jsonX12345678.tmp"]
    for name in names:
        (tmp_path / name).write_text("")
    assert remove_temp_files(target) == [tmp_path / names[0]]
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:])


def test_release_twice_and_release_unacquired_are_harmless(tmp_path) -> None:
    target = tmp_path / "rec.json"
    OutputLock(target).release()
    assert os.listdir(tmp_path) == []
    before = sorted(os.listdir("/proc/self/fd"))
    with OutputLock(target) as lock:
        lock.release()
        spare = os.open(os.devnull, os.O_RDONLY)  # may reuse the released descriptor's number
    os.fstat(spare)  # still open: the second release closed nothing of anyone else's
    os.close(spare)
    assert sorted(os.listdir("/proc/self/fd")) == before
    assert os.listdir(tmp_path) == []


def test_empty_and_missing_outputs_are_not_locked(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with lock_outputs({"--out": "", "--save": None, "--log": tmp_path / "new" / "a.json"}):
        assert sorted(os.listdir(tmp_path)) == ["new"]  # the folder of a new output is created for its lock
        assert sorted(os.listdir(tmp_path / "new")) == ["a.json.lock"]
    assert os.listdir(tmp_path / "new") == []


def test_a_lock_file_replaced_while_waiting_is_locked_again(tmp_path, monkeypatch) -> None:
    """The previous holder removes the file between our open and our flock: we must lock the new file."""
    target = tmp_path / "rec.json"
    real_flock = fcntl.flock
    calls: list[int] = []

    def flock(fd: int, op: int) -> None:
        if not calls:
            os.unlink(lock_path(target))  # the previous holder's release
        calls.append(fd)
        real_flock(fd, op)

    monkeypatch.setattr(locks.fcntl, "flock", flock)
    lock = OutputLock(target, "--out").acquire()
    monkeypatch.setattr(locks.fcntl, "flock", real_flock)
    assert len(calls) == 2
    assert os.stat(lock_path(target)).st_ino == os.fstat(lock.fd).st_ino
    assert json.loads(lock_path(target).read_text())["pid"] == os.getpid()
    assert holder_of(target) is not None
    lock.release()


def run_python(code: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=timeout)


def test_die_with_parent_sets_the_kernels_death_signal_to_sigkill() -> None:
    code = ("import ctypes; from kwta_robust.parent_watch import die_with_parent\n"
            "die_with_parent(poll_s=0.05)\n"
            "libc = ctypes.CDLL(None); sig = ctypes.c_int(-1)\n"
            "assert libc.prctl(2, ctypes.byref(sig), 0, 0, 0) == 0\n"  # PR_GET_PDEATHSIG
            "print(sig.value)")
    done = run_python(code)
    assert (done.returncode, done.stdout.strip()) == (0, "9")


def test_a_worker_whose_parent_is_gone_already_ends_at_once_with_status_1() -> None:
    done = run_python("import os; from kwta_robust.parent_watch import die_with_parent\n"
                      "die_with_parent(parent=os.getpid(), poll_s=30)\nprint('still running')")
    assert (done.returncode, done.stdout) == (1, "")


def test_the_watch_thread_ends_the_process_with_status_1_and_never_keeps_it_alive() -> None:
    done = run_python("import os; from kwta_robust.parent_watch import _watch\n_watch(os.getpid(), 0.01)\nprint('x')")
    assert (done.returncode, done.stdout) == (1, "")
    done = run_python("from kwta_robust.parent_watch import die_with_parent\n"
                      "die_with_parent(poll_s=0.05)\nimport time; time.sleep(0.3)\nprint('finished')", timeout=20)
    assert (done.returncode, done.stdout.strip()) == (0, "finished")
