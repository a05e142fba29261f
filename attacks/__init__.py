"""Adversarial attacks for any PyTorch classifier with inputs in [0, 1] and logits out.

Importing this package registers every attack family in :data:`attacks.base.REGISTRY`; build one with
``create_attack(name, **params)``. This package never imports ``kwta_robust``.
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

# One module per family; importing registers its attacks.
from attacks import gradient, bpda, adaptive, transfer, blackbox  # noqa: E402,F401

__all__ = [
    "REGISTRY", "Attack", "AttackConfigError", "ThreatModel", "available_attacks", "create_attack", "format_eps",
    "parse_eps",
]
