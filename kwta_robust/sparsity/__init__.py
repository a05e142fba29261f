"""Weight sparsity: pruning masks, magnitude / SNIP / GraSP / RigL / Early-Bird, measured sparsity.

A pure library below training: a method trains only through the :class:`~.segments.SegmentTrainer` it is handed
(:mod:`kwta_robust.training.pruning` provides the one of ``kwta-robust train``), so nothing here imports a
training loop.

* :mod:`.masks` — masks on top of ``torch.nn.utils.prune``, :func:`make_permanent`, :func:`measure_sparsity`.
* :mod:`.allocation` — scores → exact-count masks, layer-wise or global; iterative schedules.
* :mod:`.magnitude` — magnitude pruning, rewinding, the prune-retrain loop.
* :mod:`.foresight` — SNIP and GraSP scores at initialisation.
* :mod:`.rigl` — RigL dynamic sparse training as a per-step hook.
* :mod:`.early_bird` — Early-Bird ticket detection.
* :mod:`.segments` — the training interface: :class:`TrainSegment`, :class:`SegmentTrainer`,
  :class:`PruningContext`.
* :mod:`.config` — ``PruningConfig``, the :class:`PruningMethod` interface and the method registry;
  :mod:`.methods` — the built-in methods; :mod:`.pipeline` — :func:`train_pruned`, the entry point of
  ``kwta-robust train --prune``.
"""

from kwta_robust.sparsity.allocation import iterative_targets, masks_from_scores, prune_by_scores, random_masks
from kwta_robust.sparsity.config import (
    METHODS,
    PruningConfig,
    PruningMethod,
    available_pruning_methods,
    create_pruning_method,
    register_pruning_method,
)
from kwta_robust.sparsity.early_bird import EarlyBirdDetector
from kwta_robust.sparsity.foresight import grasp_scores, snip_scores
from kwta_robust.sparsity.magnitude import (
    RETRAIN_MODES,
    RoundRecord,
    capture_state,
    magnitude_scores,
    prune_and_retrain,
    rewind,
)
from kwta_robust.sparsity.masks import (
    DEFAULT_LAYER_TYPES,
    LayerSparsity,
    SparsityReport,
    apply_masks,
    current_masks,
    make_permanent,
    mask_distance,
    measure_sparsity,
    prunable_modules,
)
from kwta_robust.sparsity.pipeline import PruningOutcome, select_modules, train_pruned
from kwta_robust.sparsity.rigl import RigL, RigLUpdate
from kwta_robust.sparsity.segments import PruningContext, SegmentTrainer, TrainSegment

__all__ = [
    "DEFAULT_LAYER_TYPES", "METHODS", "EarlyBirdDetector", "LayerSparsity", "PruningConfig", "PruningContext",
    "PruningMethod", "PruningOutcome", "RETRAIN_MODES", "RigL", "RigLUpdate", "RoundRecord", "SegmentTrainer",
    "SparsityReport", "TrainSegment", "apply_masks", "available_pruning_methods", "capture_state",
    "create_pruning_method", "current_masks", "grasp_scores", "iterative_targets", "magnitude_scores",
    "make_permanent", "mask_distance", "masks_from_scores", "measure_sparsity", "prunable_modules",
    "prune_and_retrain", "prune_by_scores", "random_masks", "register_pruning_method", "rewind", "select_modules",
    "snip_scores", "train_pruned",
]
