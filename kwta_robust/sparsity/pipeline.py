"""Train a sparse network with any registered pruning method, then fold the masks and measure.

:func:`train_pruned` is the one entry point the training code calls: it selects the prunable layers, runs the
method (which installs masks and trains through the caller's :class:`~kwta_robust.sparsity.segments.SegmentTrainer`),
makes the masks permanent (plain ``weight`` tensors with exact zeros — the state_dict a checkpoint stores) and
measures the sparsity from the tensors. The result's :meth:`PruningOutcome.metadata` goes into checkpoint metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from kwta_robust.errors import ConfigError
from kwta_robust.sparsity.config import PruningConfig
from kwta_robust.sparsity.masks import SparsityReport, make_permanent, measure_sparsity, prunable_modules
from kwta_robust.sparsity.segments import PruningContext

logger = logging.getLogger(__name__)


@dataclass
class PruningOutcome:
    """Measured result of :func:`train_pruned` (masks already made permanent)."""

    config: PruningConfig
    scope: str
    pruned_layers: list[str]
    report: SparsityReport
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> float:
        """Sparsity of the pruned layers, measured from the tensors."""
        return self.report.overall_of(self.pruned_layers)

    def metadata(self) -> dict[str, Any]:
        """Plain data for checkpoint metadata: the config, measured sparsity (pruned layers, all weight layers,
        per layer) and the method's details (rounds, Early-Bird epoch, RigL updates …)."""
        return {
            "config": self.config.to_dict(),
            "method": self.config.method,
            "scope": self.scope,
            "target_sparsity": float(self.config.sparsity),
            "measured_sparsity": self.measured,
            "pruned_layers": list(self.pruned_layers),
            "weight_sparsity": self.report.to_dict(),
            "details": self.details,
        }


def select_modules(model: nn.Module, cfg: PruningConfig) -> dict[str, nn.Module]:
    """The layers ``cfg`` prunes (types from ``cfg.layer_types``, classifier per ``cfg.prune_classifier``)."""
    try:
        return prunable_modules(model, cfg.module_types, cfg.prune_classifier)
    except ValueError as exc:
        raise ConfigError(f"pruning.layer_types: {exc}; choose layer types the model has") from None


def train_pruned(model: nn.Module, cfg: PruningConfig, ctx: PruningContext) -> PruningOutcome:
    """Run ``cfg.method`` on ``model`` (in place), make its masks permanent and measure the sparsity."""
    cfg.check_epochs(ctx.train_epochs)
    method = cfg.method_object
    modules = select_modules(model, cfg)
    scope = cfg.effective_scope
    logger.info("pruning with %s (%s) to sparsity %.4f over %d layers", cfg.method, scope, cfg.sparsity, len(modules))
    details = method.run(model, modules, cfg, ctx)
    make_permanent(model)
    report = measure_sparsity(model)
    outcome = PruningOutcome(cfg, scope, list(modules), report, details)
    logger.info("measured weight sparsity: %.4f of the pruned layers, %.4f of all weight layers",
                outcome.measured, report.overall)
    return outcome
