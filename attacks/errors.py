"""Errors caused by user input, shared by :mod:`attacks` and ``kwta_robust`` (which re-exports them from
``kwta_robust.errors``): each message is one line naming the field at fault and the fix.

* :class:`InputError` — base of every error caused by user input (``kwta_robust.errors.KwtaRobustError``);
* :class:`ConfigError` — an invalid configuration value or key;
* :class:`AttackConfigError` — an invalid attack name, parameter or threat model (a ``ValueError``);
* :class:`RegistryError` — an unknown or twice-registered plug-in name. It is both a :class:`ConfigError` and an
  :class:`AttackConfigError`, so every existing ``except`` clause and the CLI's one-line error boundary catch it.

Defined here, below both packages, because the generic registry (:mod:`attacks.registry`) raises
:class:`RegistryError` and ``attacks`` never imports ``kwta_robust``.
"""

from __future__ import annotations

from typing import Sequence


class InputError(Exception):
    """Base class for errors caused by user input (configs, paths, checkpoints, data, names)."""


class ConfigError(InputError, ValueError):
    """Invalid configuration value or key."""


class AttackConfigError(ValueError):
    """Invalid attack names, parameters or threat models; the message is one line naming the fix."""


class RegistryError(ConfigError, AttackConfigError):
    """An unknown name (or a name registered twice) in one of the plug-in registries."""


def unknown_name(field: str, kind: str, value: object, known: Sequence[str], plural: str | None = None) -> str:
    """The one wording of "not one of the allowed names", for registries and fixed choices alike:
    ``"{field}: unknown {kind} {value!r}; known {kinds}: a, b, c"``."""
    return f"{field}: unknown {kind} {value!r}; known {plural or kind + 's'}: {', '.join(map(str, known))}"
