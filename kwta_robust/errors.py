"""User-facing errors: each carries one line naming the field at fault and the fix.

The CLI prints ``error: <message>`` and exits with status 2 for these, never a traceback. The base class and
:class:`ConfigError` are defined with the generic registry's :class:`RegistryError` in :mod:`attacks.errors` (below
both packages, so one registry error is a ``ConfigError`` here and an ``AttackConfigError`` in ``attacks``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from attacks.errors import (CPU_OOM_WORDS, ConfigError, InputError, RegistryError, first_line, is_finite_number,
                           is_out_of_memory, is_whole_number)

#: Base class for errors caused by user input (configs, paths, checkpoints, data, names).
KwtaRobustError = InputError


#: The batch settings besides ``batch_size`` that set an evaluation's memory (a gradient-estimation attack's
#: ``forward_batch_size`` changes only its speed).
OTHER_BATCH_SETTINGS = ("diagnostics.gradient_batch (the batch of the layer and gradient probes, default 64) and a "
                        "gradient-estimation attack's forward_batch_size (its inputs per model call)")
#: What an evaluation's out-of-memory error asks to lower, by config key (the Python API has no ``--batch-size``:
#: the CLI's line adds the flag, ``kwta_robust.cli``).
EVAL_BATCH_SETTINGS = f"batch_size, {OTHER_BATCH_SETTINGS}"


def short_repr(value: object, width: int = 60) -> str:
    """``repr(value)`` cut to ``width`` characters, ending in ``...``: a value a user gave, shown in a one-line
    message (a 5,000-digit number or a damaged list is not one line to read)."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


class EvalOutOfMemory(ConfigError):
    """An evaluation ran out of memory: one line naming the batch settings to lower. ``original`` is the allocator's
    error, from which the CLI words its own command's fix (:func:`kwta_robust.cli.out_of_memory`); optional, so
    that the error unpickles from its message (a shard worker's)."""

    def __init__(self, message: str, original: BaseException | None = None) -> None:
        super().__init__(message)
        self.original = original


@contextlib.contextmanager
def eval_out_of_memory(option: str, restart: str, set_aside: bool = False) -> Iterator[None]:
    """Running out of memory inside (torch's ``OutOfMemoryError``, its CPU allocator's ``RuntimeError``,
    ``MemoryError``) raised as one :class:`EvalOutOfMemory` line naming :data:`EVAL_BATCH_SETTINGS` and the
    output ``option`` / ``restart`` to use with another batch size (``set_aside``: the run moves a record of
    another batch size aside by itself, and says so instead): torch's own error names neither. Other errors, and
    one already raised as this (an evaluation inside a comparison), pass as they are."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        retry = (" (another batch size is another evaluation: the record written so far is then set aside)"
                 if set_aside else f", with another {option} or {restart} (another batch size is another evaluation)")
        raise EvalOutOfMemory(f"out of memory ({first_line(exc)}); lower {EVAL_BATCH_SETTINGS} in the config{retry}, "
                              "or free memory", exc) from None


class OriginFixError(ConfigError):
    """A config value the run cannot use (more ``n_examples`` than the split holds, ``device: cuda`` on a machine
    without CUDA: :func:`kwta_robust.config.resolve_device`), whose fix is worded for where the
    value came from: ``fix``, in the config key's words (a config file, a dict, ``kwta_robust.api.as_config``'s
    overrides), ends the message; ``flag_fix`` (``{flag}`` in it) replaces it where a command-line flag gave the
    value (``kwta_robust.config.flag_error``, the commands' ``flags_named``): the one place a fix is worded for its
    audience."""

    def __init__(self, field: str, problem: str, fix: str, flag_fix: str) -> None:
        super().__init__(field=field, detail=f"{problem}; {fix}")
        self.problem, self.fix, self.flag_fix = problem, fix, flag_fix

    def __reduce__(self) -> tuple:
        return type(self), (self.field, self.problem, self.fix, self.flag_fix)

    def flag_detail(self, flag: str) -> str:
        """The detail as a flag user reads it: the problem, then :attr:`flag_fix` naming ``flag``."""
        return f"{self.problem}; {self.flag_fix.format(flag=flag)}"


class DataError(KwtaRobustError):
    """Missing or malformed data set."""


class CheckpointError(KwtaRobustError):
    """Missing, corrupt or incompatible checkpoint."""


class FactoryArgumentError(CheckpointError):
    """A model factory refused its ``--factory-kwargs``: an argument it does not take, a required one left out, a
    value of another type, or a ``ValueError`` of the call naming none of those given (:mod:`kwta_robust.factory_args`);
    ``compare`` adds which model it was and that those go to every factory."""


def check_flag(name: str, value: object) -> bool:
    """A Python API switch: ``True`` or ``False`` (``'no'`` is a non-empty string, which Python reads as true), else a
    one-line :class:`ConfigError` naming ``name``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: expected True or False, got {value!r}")
    return value


__all__ = ["CPU_OOM_WORDS", "EVAL_BATCH_SETTINGS", "OTHER_BATCH_SETTINGS", "CheckpointError", "ConfigError",
           "DataError", "EvalOutOfMemory", "FactoryArgumentError", "KwtaRobustError", "OriginFixError", "RegistryError",
           "check_flag", "eval_out_of_memory", "first_line", "is_finite_number", "is_out_of_memory", "is_whole_number",
           "short_repr"]
