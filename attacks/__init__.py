"""Adversarial attacks for any PyTorch classifier with inputs in [0, 1] and logits out.

One module per attack family registers its attacks in :data:`attacks.base.REGISTRY` (a generic
:class:`attacks.registry.Registry`); the first lookup imports every module of this package, so a new family is one
new file. Build an attack with ``create_attack(name, **params)``. This package never imports ``kwta_robust``.
"""

from attacks.base import (
    REGISTRY,
    Attack,
    AttackConfigError,
    ThreatModel,
    available_attacks,
    create_attack,
    format_eps,
    parse_eps,
)

__all__ = [
    "REGISTRY", "Attack", "AttackConfigError", "ThreatModel", "available_attacks", "create_attack", "format_eps",
    "parse_eps",
]
