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
    """Invalid configuration value or key: one line, ``"{field}: {detail}"``. Raised with ``field``/``detail``
    (instead of the whole message) it keeps them apart, so a config validator can put the field's full path in
    front of ``detail`` (:mod:`kwta_robust.configio`)."""

    def __init__(self, message: str = "", *, field: str | None = None, detail: str | None = None) -> None:
        if detail is not None:
            message = f"{field}: {detail}" if field else detail
        super().__init__(message)
        self.field = field
        self.detail = detail


class AttackConfigError(ValueError):
    """Invalid attack names, parameters or threat models; the message is one line naming the fix."""


class RegistryError(ConfigError, AttackConfigError):
    """An unknown name (or a name registered twice) in one of the plug-in registries: ``field`` and ``detail``
    (what is wrong, relative to the field) make the message ``"{field}: {detail}"``."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(field=field, detail=detail)

    def __reduce__(self) -> tuple:
        return type(self), (self.field, self.detail)


def unknown_detail(kind: str, value: object, known: Sequence[str], plural: str | None = None) -> str:
    """The one wording of "not one of the allowed names", for registries and fixed choices alike:
    ``"unknown {kind} {value!r}; known {kinds}: a, b, c"`` (after the field's name)."""
    return f"unknown {kind} {value!r}; known {plural or kind + 's'}: {', '.join(map(str, known))}"
