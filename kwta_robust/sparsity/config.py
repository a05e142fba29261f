"""``PruningConfig`` (the ``pruning`` section of a training run), the pruning-method interface and its registry.

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

The keys shared by every method are checked here; the parameters of one method (``rigl_*``, ``early_bird_*``,
``score_batches``, ``grasp_temperature``) by the method that owns them (:meth:`PruningMethod.check_params`, as an
attack checks its ``params``), and the method's scopes and rounds by the method too (:meth:`PruningMethod.check`).

Methods are registered by name in :data:`METHODS` (a generic :class:`~kwta_robust.registry.Registry`; the
built-ins in :mod:`kwta_robust.sparsity.methods`):

=====================  =================  =============  ====================================================
name                   when               default scope  what
=====================  =================  =============  ====================================================
``magnitude``          after training     layer-wise     ``|w|``; one-shot or iterative; finetune / rewinding
``global-magnitude``   after training     global         the same, one threshold across layers
``snip``               at initialisation  global         ``|g ⊙ w|`` (Lee et al., ICLR 2019)
``grasp``              at initialisation  global         ``w ⊙ Hg`` (Wang et al., ICLR 2020)
``rigl``               during training    per layer      drop by ``|w|``, grow by ``|g|`` (Evci et al., 2020)
``early-bird``         during training    global         magnitude ticket drawn when masks stop moving
                                                         (You et al., ICLR 2020), then fine-tuned
=====================  =================  =============  ====================================================

Errors are one-line :class:`~kwta_robust.errors.ConfigError` s naming the field (``pruning.sparsity``) and the fix.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar, Mapping

from torch import nn

from attacks.errors import FLOAT32_MAX  # the largest rate torch's optimizers can step float32 weights by
from kwta_robust.configio import Count, Flag, Integer, Invalid, Number, config_class, parse
from kwta_robust.registry import Registry, RegistryError
from kwta_robust.sparsity.allocation import SCOPES
from kwta_robust.sparsity.magnitude import RETRAIN_MODES
from kwta_robust.sparsity.masks import LAYER_TYPE_NAMES, layer_types_from_names
from kwta_robust.sparsity.segments import PruningContext

SCHEDULES: tuple[str, ...] = ("one-shot", "iterative")


def require(cfg: Any, key: str, ok: bool, rule: str) -> None:
    """A method's check of one of its keys: :class:`Invalid` (``pruning.<key>: must be <rule>, got <v>``) unless
    ``ok``."""
    if not ok:
        raise Invalid(f"must be {rule}, got {getattr(cfg, key)!r}", at=(key,))


def in_range(value: float, low: float, high: float) -> bool:
    """``low < value <= high`` for a finite number."""
    return math.isfinite(value) and low < value <= high


class PruningMethod:
    """A way to obtain a sparse trained network (subclass it and register it in :data:`METHODS`).

    ``timing``: ``"after-training"``, ``"at-init"`` or ``"during-training"``. ``scopes``: the scopes it supports,
    ``default_scope`` the one used when the config leaves ``scope`` unset. ``supports_rounds``: whether
    ``rounds > 1`` applies. ``run`` installs masks on ``modules`` and trains ``model`` through ``ctx.trainer``; it
    returns method-specific facts for the checkpoint metadata (plain data).
    """

    name: str = ""
    timing: ClassVar[str] = "after-training"
    scopes: ClassVar[tuple[str, ...]] = SCOPES
    default_scope: str = "layerwise"
    supports_rounds: ClassVar[bool] = False
    description: str = ""

    def check_params(self, cfg: "PruningConfig") -> None:
        """Check the config keys this method owns (every registered method checks its own keys, whichever method
        the config selects, so a bad value never hides in a config)."""

    def check(self, cfg: "PruningConfig") -> None:
        """Checks that hold when ``cfg`` selects this method: its scope and rounds."""
        if cfg.scope is not None and cfg.scope not in self.scopes:
            raise Invalid(f"method {cfg.method!r} supports scope {', '.join(self.scopes)}, got {cfg.scope!r}",
                          at=("scope",))
        if cfg.rounds > 1 and not self.supports_rounds:
            raise Invalid(f"method {cfg.method!r} prunes once (rounds: 1), got {cfg.rounds}; iterative schedules apply "
                          "to magnitude and global-magnitude", at=("rounds",))

    def run(self, model: nn.Module, modules: Mapping[str, nn.Module], cfg: "PruningConfig",
            ctx: PruningContext) -> dict[str, Any]:
        raise NotImplementedError


#: Pruning methods by name (zero-argument factories); the first lookup imports :mod:`kwta_robust.sparsity.methods`.
METHODS: Registry[Callable[[], PruningMethod]] = Registry("pruning method", field="pruning.method",
                                                          plugins=("kwta_robust.sparsity.methods",),
                                                          entry_point_group="kwta_robust.pruning_methods")


def register_pruning_method(name: str, summary: str = "") -> Callable[[Callable[[], PruningMethod]],
                                                                      Callable[[], PruningMethod]]:
    """Decorator registering a zero-argument factory (class or function) of a :class:`PruningMethod`; ``summary``
    (default: the factory's docstring) is what ``METHODS.info(name)`` says about it."""
    return METHODS.register(name, summary=summary)


def available_pruning_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.names()


def create_pruning_method(name: str) -> PruningMethod:
    """The method registered as ``name`` (a fresh object); a one-line ``RegistryError`` listing the known ones."""
    return METHODS.create(name)


@config_class(frozen=True, prefix="pruning")
class PruningConfig:
    """Weight pruning of a training run (see the module docstring for every field)."""

    method: str | None = None
    sparsity: Number | None = None
    scope: str | None = None
    schedule: str | None = None
    rounds: Count = 1
    retrain: str = "finetune"
    rewind_epoch: Count = 0
    retrain_epochs: Count | None = None
    finetune_lr: Number | None = None
    layer_types: tuple[str, ...] = ("conv2d", "linear")
    prune_classifier: Flag = True
    score_batches: Count = 4
    grasp_temperature: Number = 200.0
    rigl_interval: Count = 100
    rigl_alpha: Number = 0.3
    rigl_end_fraction: Number = 0.75
    rigl_distribution: str = "erk"
    early_bird_window: Count = 5
    early_bird_threshold: Number = 0.1
    seed: Integer | None = None

    def __post_init__(self) -> None:
        """Checks of the shared keys, then of the methods' own (see the module docstring)."""
        if self.method is None:
            raise Invalid("missing; name a pruning method (--prune METHOD), one of "
                          f"{', '.join(available_pruning_methods())}", at=("method",))
        if self.sparsity is None:
            raise Invalid("missing; give the target sparsity in [0, 1) (--sparsity S)", at=("sparsity",))
        try:
            method = create_pruning_method(self.method)
        except RegistryError as exc:
            raise Invalid(exc.detail, at=("method",)) from None
        require(self, "sparsity", math.isfinite(self.sparsity) and 0.0 <= self.sparsity < 1.0,
                "a number in [0, 1) (fraction of weights set to zero)")
        if self.scope is not None and self.scope not in SCOPES:
            raise Invalid(f"must be one of {', '.join(SCOPES)} or null, got {self.scope!r}", at=("scope",))
        require(self, "rounds", self.rounds >= 1, "an integer >= 1")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise Invalid(f"must be one of {', '.join(SCHEDULES)} or null, got {self.schedule!r}", at=("schedule",))
        if self.schedule == "one-shot" and self.rounds != 1:
            raise Invalid(f"a one-shot schedule has 1 round, got {self.rounds}; use schedule: iterative",
                          at=("rounds",))
        if self.schedule == "iterative" and self.rounds < 2:
            raise Invalid(f"an iterative schedule needs rounds >= 2, got {self.rounds}", at=("rounds",))
        method.check(self)
        require(self, "retrain", self.retrain in RETRAIN_MODES, f"one of {', '.join(RETRAIN_MODES)}")
        require(self, "rewind_epoch", self.rewind_epoch >= 0, "an integer >= 0")
        require(self, "retrain_epochs", self.retrain_epochs is None or self.retrain_epochs >= 0,
                "an integer >= 0 or null")
        require(self, "finetune_lr", self.finetune_lr is None or in_range(self.finetune_lr, 0.0, FLOAT32_MAX),
                f"a number in (0, {FLOAT32_MAX:.2g}] (float32 weights) or null")
        if not self.layer_types:
            raise Invalid(f"must be a non-empty list of {', '.join(LAYER_TYPE_NAMES)}, got {self.layer_types!r}",
                          at=("layer_types",))
        try:
            layer_types_from_names(self.layer_types)
        except (KeyError, AttributeError) as exc:
            raise Invalid(f"unknown layer type {exc.args[0]!r}; choose from {', '.join(LAYER_TYPE_NAMES)}",
                          at=("layer_types",)) from None
        for entry in METHODS.entries():
            entry.obj().check_params(self)
        object.__setattr__(self, "sparsity", float(self.sparsity))

    def check_epochs(self, epochs: int, where: str = "pruning") -> None:
        """Checks that need the run's epoch count (before any training starts)."""
        if self.rewind_epoch >= epochs:
            raise Invalid(f"must be below the training epochs ({epochs}), got {self.rewind_epoch}",
                          at=(where, "rewind_epoch"))

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
        return parse(cls, data, prefix=where)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (round-trips through :meth:`from_dict`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["layer_types"] = list(self.layer_types)
        return out
