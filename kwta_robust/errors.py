"""User-facing errors: each carries one line naming the field at fault and the fix.

The CLI prints ``error: <message>`` and exits with status 2 for these, never a traceback. The base class and
:class:`ConfigError` are defined with the generic registry's :class:`RegistryError` in :mod:`attacks.errors` (below
both packages, so one registry error is a ``ConfigError`` here and an ``AttackConfigError`` in ``attacks``).
"""

from __future__ import annotations

from attacks.errors import (CPU_OOM_WORDS, ConfigError, InputError, RegistryError, first_line, is_finite_number,
                           is_out_of_memory, is_whole_number)

#: Base class for errors caused by user input (configs, paths, checkpoints, data, names).
KwtaRobustError = InputError


#: What an evaluation's out-of-memory error asks to lower: the batch settings that set its memory (the CLI's message
#: and the Python API's share them; a gradient-estimation attack's ``forward_batch_size`` changes only its speed).
EVAL_BATCH_SETTINGS = ("batch_size (--batch-size), diagnostics.gradient_batch (the batch of the layer and gradient "
                       "probes, default 64) and a gradient-estimation attack's forward_batch_size (its inputs per "
                       "model call)")


class DataError(KwtaRobustError):
    """Missing or malformed data set."""


class CheckpointError(KwtaRobustError):
    """Missing, corrupt or incompatible checkpoint."""


def check_flag(name: str, value: object) -> bool:
    """A Python API switch: ``True`` or ``False`` (``'no'`` is a non-empty string, which Python reads as true), else a
    one-line :class:`ConfigError` naming ``name``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: expected True or False, got {value!r}")
    return value


__all__ = ["CPU_OOM_WORDS", "EVAL_BATCH_SETTINGS", "CheckpointError", "ConfigError", "DataError", "KwtaRobustError",
           "RegistryError", "check_flag", "first_line", "is_finite_number", "is_out_of_memory", "is_whole_number"]
