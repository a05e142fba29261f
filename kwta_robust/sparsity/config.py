"""``PruningConfig``: the ``pruning`` sub-config of a training run, validated with one-line errors.

YAML / dict form (every key but ``method`` and ``sparsity`` optional)::

    pruning:
      method: magnitude          # magnitude | global-magnitude | snip | grasp | rigl | early-bird
      sparsity: 0.8              # fraction of the prunable weights set to zero, in [0, 1)
      scope: null                # layerwise | global (null: the method's default)
      schedule: null             # one-shot | iterative (null: iterative when rounds > 1)
      rounds: 1                  # pruning rounds (after-training methods); each prunes 1-(1-s)^(1/R) of the rest
      retrain: finetune          # finetune | rewind-weights | rewind-lr (after-training and early-bird)
      rewind_epoch: 0            # k: rewind point (weights and/or LR schedule), 0 = initialisation
      retrain_epochs: null       # epochs of each finetune run (null: epochs - rewind_epoch)
      finetune_lr: null          # constant LR of fine-tuning (null: the schedule's last LR, at least lr/10)
      layer_types: [conv2d, linear]
      prune_classifier: true     # prune the final classifier layer too (false: keep it dense)
      score_batches: 4           # mini-batches for SNIP / GraSP scores
      grasp_temperature: 200.0
      rigl_interval: 100         # ΔT, optimiser steps between RigL updates
      rigl_alpha: 0.3            # initial update fraction
      rigl_end_fraction: 0.75    # stop updating after this fraction of training
      rigl_distribution: erk     # erk (small layers denser, Evci et al.'s best) | uniform (same sparsity per layer)
      early_bird_window: 5       # epochs whose mask distances must all stay under the threshold
      early_bird_threshold: 0.1
      seed: null                 # seed of random masks (RigL init); null: the training seed

Errors are :class:`~kwta_robust.errors.ConfigError` naming the field (``pruning.sparsity``) and the fix.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

from kwta_robust.errors import ConfigError
from kwta_robust.sparsity.allocation import DISTRIBUTIONS, SCOPES
from kwta_robust.sparsity.magnitude import RETRAIN_MODES
from kwta_robust.sparsity.masks import LAYER_TYPE_NAMES, layer_types_from_names
from kwta_robust.sparsity.registry import PruningMethod, available_pruning_methods, create_pruning_method

SCHEDULES: tuple[str, ...] = ("one-shot", "iterative")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


@dataclass(frozen=True)
class PruningConfig:
    """Weight pruning of a training run (see the module docstring for every field)."""

    method: str | None = None
    sparsity: float | None = None
    scope: str | None = None
    schedule: str | None = None
    rounds: int = 1
    retrain: str = "finetune"
    rewind_epoch: int = 0
    retrain_epochs: int | None = None
    finetune_lr: float | None = None
    layer_types: tuple[str, ...] = ("conv2d", "linear")
    prune_classifier: bool = True
    score_batches: int = 4
    grasp_temperature: float = 200.0
    rigl_interval: int = 100
    rigl_alpha: float = 0.3
    rigl_end_fraction: float = 0.75
    rigl_distribution: str = "erk"
    early_bird_window: int = 5
    early_bird_threshold: float = 0.1
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate()
        object.__setattr__(self, "sparsity", float(self.sparsity))
        object.__setattr__(self, "layer_types", tuple(self.layer_types))

    # -- validation ------------------------------------------------------------------------------------------
    def validate(self, where: str = "pruning") -> None:
        """Raise :class:`ConfigError` (one line naming ``where.field`` and the fix) for any invalid value."""
        if self.method is None:
            raise ConfigError(f"{where}.method: missing; name a pruning method (--prune METHOD), one of "
                              f"{', '.join(available_pruning_methods())}")
        if self.sparsity is None:
            raise ConfigError(f"{where}.sparsity: missing; give the target sparsity in [0, 1) (--sparsity S)")
        if not isinstance(self.method, str):
            raise ConfigError(f"{where}.method: expected a method name, got {self.method!r}")
        method = create_pruning_method(self.method)  # an unknown name: one line listing the known methods
        if not _is_number(self.sparsity) or not 0.0 <= float(self.sparsity) < 1.0:
            raise ConfigError(
                f"{where}.sparsity: must be a number in [0, 1) (fraction of weights set to zero), got {self.sparsity!r}"
            )
        if self.scope is not None and self.scope not in SCOPES:
            raise ConfigError(f"{where}.scope: must be one of {', '.join(SCOPES)} or null, got {self.scope!r}")
        if self.scope is not None and self.scope not in method.scopes:
            raise ConfigError(
                f"{where}.scope: method {self.method!r} supports scope {', '.join(method.scopes)}, got {self.scope!r}"
            )
        if not _is_int(self.rounds) or self.rounds < 1:
            raise ConfigError(f"{where}.rounds: must be an integer >= 1, got {self.rounds!r}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ConfigError(f"{where}.schedule: must be one of {', '.join(SCHEDULES)} or null, got {self.schedule!r}")
        if self.schedule == "one-shot" and self.rounds != 1:
            raise ConfigError(f"{where}.rounds: a one-shot schedule has 1 round, got {self.rounds}; "
                              "use schedule: iterative")
        if self.schedule == "iterative" and self.rounds < 2:
            raise ConfigError(f"{where}.rounds: an iterative schedule needs rounds >= 2, got {self.rounds}")
        if self.rounds > 1 and not method.supports_rounds:
            raise ConfigError(f"{where}.rounds: method {self.method!r} prunes once (rounds: 1), got {self.rounds}; "
                              "iterative schedules apply to magnitude and global-magnitude")
        if self.retrain not in RETRAIN_MODES:
            raise ConfigError(f"{where}.retrain: must be one of {', '.join(RETRAIN_MODES)}, got {self.retrain!r}")
        if not _is_int(self.rewind_epoch) or self.rewind_epoch < 0:
            raise ConfigError(f"{where}.rewind_epoch: must be an integer >= 0, got {self.rewind_epoch!r}")
        if self.retrain_epochs is not None and (not _is_int(self.retrain_epochs) or self.retrain_epochs < 0):
            raise ConfigError(f"{where}.retrain_epochs: must be an integer >= 0 or null, got {self.retrain_epochs!r}")
        if self.finetune_lr is not None and (not _is_number(self.finetune_lr) or self.finetune_lr <= 0):
            raise ConfigError(f"{where}.finetune_lr: must be a number > 0 or null, got {self.finetune_lr!r}")
        if isinstance(self.layer_types, str) or not self.layer_types:
            raise ConfigError(f"{where}.layer_types: must be a non-empty list of {', '.join(LAYER_TYPE_NAMES)}, "
                              f"got {self.layer_types!r}")
        try:
            layer_types_from_names(self.layer_types)
        except (KeyError, AttributeError) as exc:
            raise ConfigError(f"{where}.layer_types: unknown layer type {exc.args[0]!r}; "
                              f"choose from {', '.join(LAYER_TYPE_NAMES)}") from None
        if not isinstance(self.prune_classifier, bool):
            raise ConfigError(f"{where}.prune_classifier: must be true or false, got {self.prune_classifier!r}")
        for key, minimum in (("score_batches", 1), ("rigl_interval", 1), ("early_bird_window", 1)):
            value = getattr(self, key)
            if not _is_int(value) or value < minimum:
                raise ConfigError(f"{where}.{key}: must be an integer >= {minimum}, got {value!r}")
        for key, low, high, closed_low in (
            ("grasp_temperature", 0.0, math.inf, False),
            ("rigl_alpha", 0.0, 1.0, False),
            ("rigl_end_fraction", 0.0, 1.0, False),
            ("early_bird_threshold", 0.0, 1.0, False),
        ):
            value = getattr(self, key)
            if not _is_number(value) or not (value > low or (closed_low and value == low)) or value > high:
                raise ConfigError(f"{where}.{key}: must be a number in ({low:g}, {high:g}], got {value!r}")
        if self.rigl_distribution not in DISTRIBUTIONS:
            raise ConfigError(f"{where}.rigl_distribution: must be one of {', '.join(DISTRIBUTIONS)}, "
                              f"got {self.rigl_distribution!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise ConfigError(f"{where}.seed: must be an integer or null, got {self.seed!r}")

    def check_epochs(self, epochs: int, where: str = "pruning") -> None:
        """Checks that need the run's epoch count (before any training starts)."""
        if self.rewind_epoch >= epochs:
            raise ConfigError(f"{where}.rewind_epoch: must be below the training epochs ({epochs}), "
                              f"got {self.rewind_epoch}")

    # -- derived ---------------------------------------------------------------------------------------------
    @property
    def method_object(self) -> PruningMethod:
        """The registered method (a fresh object)."""
        return create_pruning_method(self.method)

    @property
    def effective_scope(self) -> str:
        return self.scope if self.scope is not None else self.method_object.default_scope

    @property
    def module_types(self) -> tuple[type[nn.Module], ...]:
        return layer_types_from_names(self.layer_types)

    # -- io --------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, where: str = "pruning") -> "PruningConfig":
        """Build from a mapping (YAML); unknown keys and missing ``method``/``sparsity`` raise ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in valid]
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")
        kwargs = dict(data)
        if "layer_types" in kwargs and isinstance(kwargs["layer_types"], (list, tuple)):
            kwargs["layer_types"] = tuple(kwargs["layer_types"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (round-trips through :meth:`from_dict`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["layer_types"] = list(self.layer_types)
        return out
