"""Adversarial attacks for any PyTorch classifier with inputs in [0, 1] and logits out.

One module per attack family registers its attacks in :data:`attacks.base.REGISTRY` (a generic
:class:`attacks.registry.Registry`); the first lookup imports every module of this package, so a new family is one
new file. Build an attack with ``create_attack(name, **params)``. This package never imports ``kwta_robust``.

The names below are imported from :mod:`attacks.base` on first use (PEP 562), so importing a light submodule such
as :mod:`attacks.errors` does not import torch (the command line's error boundary needs only the error classes).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "REGISTRY", "Attack", "AttackConfigError", "ThreatModel", "available_attacks", "create_attack", "format_eps",
    "parse_eps",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("attacks.base"), name)
    raise AttributeError(f"module 'attacks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
