"""The process heap policy of every ``kwta-robust`` command: freed memory is kept for reuse, not returned to the OS.

An attack runs the same forward and backward pass thousands of times on tensors of the same shapes. With glibc's
default ``malloc`` that can cost a third of the time: glibc serves large blocks with ``mmap`` below a threshold it
raises as blocks are freed, and gives the top of its heap back to the OS whenever more than twice that threshold is
free there. Whether a pass ends with that much free at the top depends on the order of its allocations — on the
small kWTA CNN (forward + input gradient, batch 128, channels-last, one thread) the NumPy temporaries of the kWTA
selection made the heap shrink and grow again on every pass in some runs: 300-7,000 page faults a pass, the pass
1.13-1.20x as long as its ReLU twin's, against 1.09-1.11x without the faults; the ReLU twin itself faulted 3,000
times a pass in one run of four. The faults are the kernel zeroing each page again, not work of the model.

:func:`retain_freed_memory` sets glibc's two thresholds once, through ``mallopt`` (``man 3 mallopt``): blocks up to
:data:`MMAP_THRESHOLD_BYTES` (32 MiB on 64-bit: the upper limit ``man 3 mallopt`` gives and the most glibc's own
adaptive threshold reaches; glibc 2.36 accepts larger values too) come from the heap, and up to
:data:`TRIM_THRESHOLD_BYTES` of free memory at its top is kept. The process then holds on to its peak memory
until it ends (an evaluation reaches that peak on its first batch anyway); numbers are unchanged — where memory
comes from does not change what is computed on it. Blocks above 32 MiB (large query batches) are still mapped
and unmapped each time.

Who applies it: the CLI (every command that runs torch), the process-pool workers and the Ray tasks of sweeps and
sharded evaluations, and the benchmarks (they measure what a command runs). A library caller keeps its own heap
unless it calls :func:`retain_freed_memory`. Where the user tuned glibc's heap already (any of
:data:`GLIBC_HEAP_VARIABLES` in the environment, or ``glibc.malloc`` tunables in ``GLIBC_TUNABLES``), their setting
stands and nothing is changed: ``MALLOC_TRIM_THRESHOLD_=131072 kwta-robust ...`` runs with glibc's usual trimming.
Other C libraries (musl, macOS) and allocators preloaded in glibc's place are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

#: ``mallopt`` parameters of glibc's ``<malloc.h>``.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap (``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit: the limit of glibc's
#: adaptive threshold, half its 64 MiB heap size; the upper limit ``man 3 mallopt`` gives).
MMAP_THRESHOLD_BYTES = 32 * 2**20
#: Free memory at the top of the heap kept for reuse.
TRIM_THRESHOLD_BYTES = 2**30
#: Environment variables through which a user tunes glibc's heap; any of them set means "leave it as I said".
GLIBC_HEAP_VARIABLES: tuple[str, ...] = (
    "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX",
)


def runs_on_glibc() -> bool:
    """Whether this process's C library is glibc (``os.confstr("CS_GNU_LIBC_VERSION")``, Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return False
    return version.startswith("glibc")


def user_tuned_heap(environ: "os._Environ[str] | dict[str, str] | None" = None) -> str | None:
    """The environment variable through which the user tuned glibc's heap, or ``None``."""
    env = os.environ if environ is None else environ
    for name in GLIBC_HEAP_VARIABLES:
        if name in env:
            return name
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def retain_freed_memory() -> bool:
    """Keep freed memory in this process's heap for reuse (module docstring); ``True`` when glibc took the setting.

    Idempotent; process-wide and for the rest of the process (glibc has no way back to its adaptive thresholds).
    Does nothing, and returns ``False``, off glibc or where the user tuned the heap through the environment.
    """
    if not runs_on_glibc():
        return False
    tuned = user_tuned_heap()
    if tuned is not None:
        logger.debug("heap: %s is set; glibc's heap stays as the environment says", tuned)
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
               and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
    logger.debug("heap: freed memory kept for reuse: %s", "yes" if applied else "glibc refused the setting")
    return applied
