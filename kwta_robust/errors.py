"""User-facing errors: each carries one line naming the field at fault and the fix.

The CLI prints ``error: <message>`` and exits with status 2 for these, never a traceback.
"""

from __future__ import annotations


class KwtaRobustError(Exception):
    """Base class for errors caused by user input (configs, paths, checkpoints, data)."""


class ConfigError(KwtaRobustError, ValueError):
    """Invalid configuration value or key."""


class DataError(KwtaRobustError):
    """Missing or malformed data set."""


class CheckpointError(KwtaRobustError):
    """Missing, corrupt or incompatible checkpoint."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters; the class name when it is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
