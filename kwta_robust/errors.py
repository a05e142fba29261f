"""User-facing errors: each carries one line naming the field at fault and the fix.

The CLI prints ``error: <message>`` and exits with status 2 for these, never a traceback. The base class and
:class:`ConfigError` are defined with the generic registry's :class:`RegistryError` in :mod:`attacks.errors` (below
both packages, so one registry error is a ``ConfigError`` here and an ``AttackConfigError`` in ``attacks``).
"""

from __future__ import annotations

import sys

from attacks.errors import ConfigError, InputError, RegistryError, first_line

#: Base class for errors caused by user input (configs, paths, checkpoints, data, names).
KwtaRobustError = InputError


class DataError(KwtaRobustError):
    """Missing or malformed data set."""


class CheckpointError(KwtaRobustError):
    """Missing, corrupt or incompatible checkpoint."""


#: Words of torch's allocation failures on the CPU (``DefaultCPUAllocator: not enough memory`` / ``can't allocate
#: memory``); ``torch.OutOfMemoryError`` (CUDA and other accelerators) is recognised by its class.
CPU_OOM_WORDS = ("DefaultCPUAllocator", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error: Python's ``MemoryError``, torch's ``OutOfMemoryError`` or its CPU
    allocator's ``RuntimeError`` (torch is not imported here: a process that never imported it raised none)."""
    torch = sys.modules.get("torch")
    oom_class = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return (isinstance(exc, MemoryError) or (oom_class is not None and isinstance(exc, oom_class))
            or (isinstance(exc, RuntimeError) and any(word in str(exc) for word in CPU_OOM_WORDS)))


__all__ = ["CheckpointError", "ConfigError", "DataError", "KwtaRobustError", "RegistryError", "first_line",
           "is_out_of_memory"]
