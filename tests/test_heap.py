"""The commands' heap policy (:mod:`kwta_robust.heap`): glibc's default heap gives memory back to the OS and faults
it in again on every repetition of an allocation pattern; with the policy the repetitions after the first fault
no page; the user's own glibc settings stand; and the CLI and the process-pool workers apply it (the Ray tasks:
``tests/test_sweep_ray.py``). Each check of the heap runs in a fresh interpreter or worker with the pattern that
glibc's default heap trims whatever came before. (The small kWTA CNN's passes faulted 300-7,000 pages each in some
runs and none in others — on glibc's side a matter of the heap's history, and with the policy a few hundred pages
now and then when the machine reclaims memory: measured, see the module, not a test that could decide.)"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kwta_robust import heap

TESTS = Path(__file__).resolve().parent
BLOCK = 30 * 2**20
TRIMMED = 4 * BLOCK // 4096 // 2  # faults of a repetition whose memory went back to the OS: more than half its pages

pytestmark = pytest.mark.skipif(not heap.runs_on_glibc(), reason="the heap policy acts on glibc only")


def trimmed_heap_faults(repeats: int = 4) -> list[int]:
    """Minor page faults of the calling thread in each of ``repeats`` repetitions of a pattern glibc's default heap
    trims every time, whatever the process allocated before.

    A 30 MiB block (mapped: above glibc's initial 128 KiB threshold) freed first raises glibc's mmap threshold to
    30 MiB (unless it is higher already: at most 32 MiB), and its trim threshold to twice that; each repetition
    then takes four blocks of just under 30 MiB from the top of the heap, writes them and frees them: 120 MiB free
    at the top, more than any trim threshold glibc sets itself, goes back to the OS, and the next repetition
    faults every page in again (about 30,000)."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)

    def written(size: int) -> int:
        block = libc.malloc(size)
        libc.memset(block, 1, size)
        return block

    # This thread's faults only: a Ray worker's or a pool worker's own threads (gRPC, result handlers) may fault a
    # page or two of their own meanwhile, which says nothing about the heap (it made the Ray test fail once).
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    libc.free(written(BLOCK))
    faults = []
    for _ in range(repeats):
        before = resource.getrusage(who).ru_minflt
        for block in [written(BLOCK - 4096) for _ in range(4)]:
            libc.free(block)
        faults.append(resource.getrusage(who).ru_minflt - before)
    return faults


def fresh_process(code: str, **environment: str) -> Any:
    """Run ``code`` in a new interpreter (this module importable as ``test_heap``, no glibc heap variable set but
    ``environment``): the JSON it prints last."""
    env = {k: v for k, v in os.environ.items() if k not in heap.GLIBC_HEAP_VARIABLES and k != "GLIBC_TUNABLES"}
    env.update(environment)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), str(TESTS.parent), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"the fresh interpreter failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


PATTERN = "import json, test_heap{setup}; print(json.dumps([{applied}, test_heap.trimmed_heap_faults()]))"


def test_default_heap_faults_every_repetition_and_the_policy_stops_it():
    applied, faults = fresh_process(PATTERN.format(setup="", applied="None"))
    assert all(f > TRIMMED for f in faults[1:]), faults  # glibc's own behaviour: the control
    applied, faults = fresh_process(PATTERN.format(setup="; from kwta_robust.heap import retain_freed_memory; "
                                                         "applied = retain_freed_memory()", applied="applied"))
    assert applied is True
    assert faults[1:] == [0] * (len(faults) - 1), faults


@pytest.mark.parametrize("environment", [{"MALLOC_TRIM_THRESHOLD_": "131072"},
                                         {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_the_users_own_glibc_setting_stands(environment):
    code = PATTERN.format(setup="; from kwta_robust.heap import retain_freed_memory; applied = retain_freed_memory()",
                          applied="applied")
    applied, faults = fresh_process(code, **environment)
    assert applied is False
    assert all(f > TRIMMED for f in faults[1:]), faults


def test_user_tuned_heap_names_the_variable():
    assert heap.user_tuned_heap({}) is None
    assert heap.user_tuned_heap({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=2048"}) is None
    assert heap.user_tuned_heap({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1"}) == "GLIBC_TUNABLES"
    assert heap.user_tuned_heap({"MALLOC_ARENA_MAX": "2", "PATH": "/bin"}) == "MALLOC_ARENA_MAX"


def test_the_cli_applies_the_policy_before_a_command_runs(monkeypatch, tmp_path):
    from kwta_robust.cli import main  # imported here: the fresh interpreters above import this module without torch

    calls = []
    monkeypatch.setattr(heap, "retain_freed_memory", lambda: calls.append("heap") or True)
    assert main(["evaluate", str(tmp_path / "missing.pt"), "--config", "quick"]) == 2  # one-line error, after it
    assert calls == ["heap"]


def test_process_pool_workers_apply_the_policy():
    from kwta_robust.sweep.executors.pool import PoolExecutor

    completions = list(PoolExecutor(2).map_unordered(trimmed_heap_faults, [3, 3]))
    assert [c.error for c in completions] == [None, None]
    assert [c.result[1:] for c in completions] == [[0, 0]] * 2, [c.result for c in completions]
