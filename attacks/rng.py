"""The global random generators seeded for a block and restored after (third-party attack code and randomized
models draw from them; this package's own attacks draw from explicit generators only)."""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def rng_scope(seed: int) -> Iterator[None]:
    """Seed the global RNGs for third-party code (torchattacks, foolbox) and randomized models, and restore the
    caller's state after.

    Forks the CPU generator and, where CUDA is initialised, every CUDA device's generator (torchattacks
    re-seeds with ``torch.manual_seed``, which reaches all devices); then seeds with ``seed`` — only the CPU
    generator while CUDA is not initialised, so no lazily queued CUDA seed outlives the scope. NumPy's and Python's
    global generators are saved, seeded from ``seed`` and restored too: a randomized defense that draws its noise
    or resizing from ``np.random`` or ``random`` is then as reproducible as one drawing from torch.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            if devices:
                torch.manual_seed(int(seed))
            else:  # CUDA not initialised: torch.manual_seed would queue a CUDA seed that outlives this scope
                torch.default_generator.manual_seed(int(seed))
            np.random.seed(int(seed) % 2**32)
            random.seed(int(seed))
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
