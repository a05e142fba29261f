"""Worker processes that end when the process that started them dies.

A sweep's pool workers ignore Ctrl-C (the parent stops them), so a parent killed without cleaning up (``kill -9``,
the out-of-memory killer) would leave them training and writing on their own. :func:`die_with_parent`, called in
each worker's initializer, prevents that twice over: on Linux the kernel sends the worker ``SIGKILL`` when its
parent dies (``prctl(PR_SET_PDEATHSIG)``), and everywhere a daemon thread notices that the parent changed
(re-parenting) within ``poll_s`` seconds and ends the worker. Finished work is on disk already (records and
checkpoints are written atomically), so nothing is lost that a resumed run does not redo.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _set_death_signal() -> None:
    """Linux: have the kernel send SIGKILL to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no libc prctl: the watch thread still applies
        pass


def _watch(parent: int, poll_s: float) -> None:
    while True:
        time.sleep(poll_s)
        if os.getppid() != parent:
            os._exit(1)


def die_with_parent(parent: int | None = None, poll_s: float = 1.0) -> None:
    """End this process when its parent dies (see the module docstring). ``parent``: the pid the parent had
    (default: the current parent); if it is gone already, end now."""
    parent = os.getppid() if parent is None else parent
    _set_death_signal()
    if os.getppid() != parent:  # the parent died before the death signal was set up
        os._exit(1)
    threading.Thread(target=_watch, args=(parent, poll_s), daemon=True, name="parent-watch").start()
