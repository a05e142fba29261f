"""Output locks with real processes: a second writer fails at once naming the holder and the first run's record
is intact; a killed holder's lock is taken over; sweep folders; manifests of killed sweeps read `interrupted`;
pool workers die with a killed parent and a terminated pool leaks no semaphores; no fcntl means a clear error,
not a broken import."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from kwta_robust.cli import main
from kwta_robust.locks import LockError, OutputLock, holder_of, lock_path
from kwta_robust.record_checks import check_record
from kwta_robust.results import load_record
from kwta_robust.sweep import MANIFEST_FORMAT, manifest_path, read_manifest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
GATE_ENV = "KWTA_TEST_GATE"


def gated_model() -> nn.Module:
    """A bring-your-own model whose forward waits until the file named by $KWTA_TEST_GATE exists (at most 60 s):
    the evaluation holding the record's lock stays running as long as a test needs. While it waits, ``GATE.waiting``
    exists (:func:`waiting_marker`): the run is in the model's forward, past its start and its lock."""
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            gate = os.environ.get(GATE_ENV)
            if gate:
                waiting_marker(gate).touch()
            deadline = time.monotonic() + 60
            while gate and not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.02)
            return self.fc(x.flatten(1))

    return Gated()


def waiting_marker(gate: str | Path) -> Path:
    """The file :func:`gated_model`'s forward creates on entry, beside its ``gate``."""
    return Path(f"{gate}.waiting")


def plain_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


HOLD = """
import sys, time
from kwta_robust.locks import OutputLock
lock = OutputLock(sys.argv[1], "--out").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def hold_lock(target: Path) -> subprocess.Popen:
    """A separate process holding the lock on ``target`` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_second_holder_fails_at_once_naming_the_first_and_a_killed_holder_is_taken_over(tmp_path, caplog) -> None:
    target = tmp_path / "rec.json"
    proc = hold_lock(target)
    try:
        start = time.monotonic()
        with pytest.raises(LockError) as info:
            OutputLock(target, "--out").acquire()
        assert time.monotonic() - start < 2  # at once, no waiting
        message = str(info.value)
        assert f"pid {proc.pid} on host {socket.gethostname()}" in message and "\n" not in message
        assert message.startswith(f"--out: {target} is in use by another kwta-robust run")
        assert holder_of(target).pid == proc.pid
    finally:
        kill(proc)  # kill -9: the kernel drops the flock, the lock file with the old holder stays
    assert lock_path(target).exists() and holder_of(target) is None
    with caplog.at_level(logging.WARNING, logger="kwta_robust.locks"):
        with OutputLock(target, "--out"):
            assert json.loads(lock_path(target).read_text())["pid"] == os.getpid()
    assert f"taking over the lock left by pid {proc.pid}" in caplog.text
    assert not lock_path(target).exists()  # released cleanly: the lock file is removed



def test_taking_over_a_killed_holders_lock_removes_the_temp_file_it_was_writing(tmp_path, caplog) -> None:
    # kill -9 during atomic_write leaves `.<name>.XXXXXXXX.tmp` beside the output: no later run removed it
    target = tmp_path / "rec.json"
    target.write_text("{}")
    left, other = tmp_path / ".rec.json.k2x_9a0b.tmp", tmp_path / ".rec.json.html.k2x_9a0b.tmp"
    proc = hold_lock(target)
    left.write_text('{"half": ')
    other.write_text("<html")
    kill(proc)
    with caplog.at_level(logging.WARNING, logger="kwta_robust.locks"):
        with OutputLock(target, "--out"):
            assert not left.exists()
    assert f"taking over the lock left by pid {proc.pid}" in caplog.text
    assert "removed the 1 temp file(s) it was writing" in caplog.text
    assert other.exists() and target.read_text() == "{}"  # another output's temp file and the record stay


def test_two_evaluations_of_the_same_out_the_second_fails_the_first_record_is_intact(tmp_path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "mnist5k", "n_examples": 4, "batch_size": 4, "device": "cpu",
                                   "threats": [{"norm": "linf", "epsilons": [0.1]}],
                                   "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
                                   "diagnostics": {"enabled": False}}))
    out, gate = tmp_path / "rec.json", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-m", "kwta_robust.cli", "-q", "evaluate", "--model-factory",
                              "test_locks:gated_model", "--config", str(cfg), "--out", str(out), "--no-progress"],
                             env={**ENV, GATE_ENV: str(gate)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        while holder_of(out) is None and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert holder_of(out) is not None, first.stderr.read() if first.poll() is not None else "no lock"
        rc = main(["evaluate", "--model-factory", "test_locks:plain_model", "--config", str(cfg), "--out", str(out),
                   "--no-progress"])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "error:" in line]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err
        assert f"is in use by another kwta-robust run (pid {first.pid} on host" in lines[0]
    finally:
        gate.touch()
        assert first.wait(timeout=120) == 0
    record = load_record(out)
    check_record(record, str(out))
    assert record.status == "complete" and record.model["source"] == "test_locks:gated_model"



def test_a_terminated_evaluation_stops_as_on_ctrl_c_and_releases_its_lock(tmp_path) -> None:
    # SIGTERM (kill PID) used to end the process at once: no message, exit -15, the lock file left for the next run
    # to take over with a warning, a half-written temp file left in the record's folder
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "mnist5k", "n_examples": 4, "batch_size": 4, "device": "cpu",
                                   "threats": [{"norm": "linf", "epsilons": [0.1]}],
                                   "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
                                   "diagnostics": {"enabled": False}}))
    out, gate = tmp_path / "rec.json", tmp_path / "never"
    proc = subprocess.Popen([sys.executable, "-m", "kwta_robust.cli", "-q", "evaluate", "--model-factory",
                             "test_locks:gated_model", "--config", str(cfg), "--out", str(out), "--no-progress"],
                            env={**ENV, GATE_ENV: str(gate)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        # waited for in the model's forward, not for the lock: the lock is taken before the model and its code load,
        # and polling it (holder_of locks it shared) could collide with the run taking it
        deadline = time.monotonic() + 120
        while not waiting_marker(gate).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting_marker(gate).exists()  # the run waits in the model's forward...
        assert holder_of(out) is not None  # ... and holds its record
    finally:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "interrupted: nothing was saved"  # no unit finished: no record
    assert not lock_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", waiting_marker(gate).name]


def test_sweep_folder_is_locked_for_its_driver(tmp_path, capsys) -> None:
    out_dir = tmp_path / "sweep"
    data = {"train": {"dataset": "digits", "arch": "mlp", "arch_kwargs": {"hidden": [4]}, "epochs": 0,
                      "device": "cpu"},
            "grid": {"kwta_ratios": [1.0], "weight_sparsities": [0.0]},
            "eval": {"dataset": "digits", "n_examples": 4, "device": "cpu", "diagnostics": {"enabled": False}}}
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(data))
    proc = hold_lock(manifest_path(out_dir))
    try:
        assert main(["sweep", str(cfg), "--out-dir", str(out_dir), "--no-progress", "--no-plots"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--out-dir: {manifest_path(out_dir)} is in use" in err[0] and \
            f"pid {proc.pid}" in err[0]
        assert not manifest_path(out_dir).exists()
    finally:
        kill(proc)


def test_manifest_of_a_killed_sweep_reads_interrupted(tmp_path) -> None:
    path = manifest_path(tmp_path)
    path.write_text(json.dumps({"format": MANIFEST_FORMAT, "status": "running", "cells": []}))
    assert read_manifest(path)["status"] == "interrupted"  # nobody holds the folder: that driver is gone
    proc = hold_lock(path)
    try:
        assert read_manifest(path)["status"] == "running"  # a live driver holds it
    finally:
        kill(proc)
    assert read_manifest(path)["status"] == "interrupted"


POOL = """
import time
from kwta_robust.sweep.executors.pool import PoolExecutor
for completion in PoolExecutor(2).map_unordered(time.sleep, [120, 120]):
    pass
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    """The command line of ``pid``; empty for a process that ended since the table was read (a short-lived child
    of the parent's start-up: before, reading it raised FileNotFoundError and failed the test at random)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
def test_pool_workers_die_with_a_killed_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", POOL], env=ENV)
    try:
        deadline = time.monotonic() + 90
        workers: list[int] = []
        while time.monotonic() < deadline:  # the two workers (plus multiprocessing's resource tracker)
            workers = [p for p in _children(parent.pid) if "spawn_main" in _cmdline(p)]
            if len(workers) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2
        time.sleep(1.0)  # let the workers finish their initializer
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    deadline = time.monotonic() + 60  # at load 11 on 2 cores the workers' exit took over 15 s (session 52)
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers)



POOL_BARS = """
import sys
from kwta_robust.sweep.executors.pool import PoolExecutor
from test_locks import bar_then_wait
try:
    for completion in PoolExecutor(2).map_unordered(bar_then_wait, [sys.argv[1]] * 2):
        pass
except KeyboardInterrupt:
    sys.exit(130)
"""


def bar_then_wait(folder: str) -> None:
    """A pool job that locks its output and draws a (hidden) tqdm bar, as an evaluation does, says so in
    ``folder`` and waits."""
    from tqdm import tqdm

    with OutputLock(Path(folder, f"{os.getpid()}.json"), "--out"), tqdm(total=1, disable=True):
        Path(folder, str(os.getpid())).touch()
        time.sleep(120)


def test_a_terminated_pool_leaves_no_leaked_semaphores_and_no_locks(tmp_path) -> None:
    # each spawned worker used to create tqdm's multiprocessing lock with its first bar, registered with the
    # driver's resource tracker; a worker terminated by the driver never unregistered it, and the tracker warned
    # "There appear to be N leaked semaphore objects to clean up at shutdown" after every SIGTERM of a sharded run
    parent = subprocess.Popen([sys.executable, "-c", POOL_BARS, str(tmp_path)], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while len(workers := [p for p in tmp_path.iterdir() if p.name.isdigit()]) < 2 and parent.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2  # both workers hold their output's lock, have drawn their bar and wait
        assert all(holder_of(tmp_path / f"{p.name}.json") is not None for p in workers)
    finally:
        parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=90)  # returns once the resource tracker, which shares stderr, has exited
    assert parent.returncode == 130, err
    assert "leaked semaphore" not in err and "Traceback" not in err, err
    assert not any(_alive(int(p.name)) for p in workers)
    # the terminated jobs unwound: their locks were released and their lock files removed (SIGTERM's default
    # action used to end each worker at once, leaving the files for the next run to take over with a warning)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in workers)


NO_FCNTL = """
import sys
sys.modules["fcntl"] = None  # `import fcntl` raises ImportError, as on Windows
import kwta_robust.locks as locks
assert locks.fcntl is None and locks.holder_of(sys.argv[1]) is None
try:
    locks.OutputLock(sys.argv[1], "--out").acquire()
except locks.LockError as exc:
    print(exc)
"""


def test_without_fcntl_the_package_imports_and_locking_says_why(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-c", NO_FCNTL, str(tmp_path / "r.json")], env=ENV, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("--out: output locks need POSIX file locking (fcntl)")
