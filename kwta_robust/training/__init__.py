"""Training: standard, PGD adversarial (Madry et al., ICLR 2018), TRADES (Zhang et al., ICML 2019), weight pruning
(:mod:`kwta_robust.sparsity`) and Xiao et al.'s incremental kWTA sparsity (ICLR 2020).

* :mod:`.config` — :class:`TrainConfig` and its sections, from YAML or flags (one-line errors naming the key);
* :mod:`.recipes` — optimizers, learning-rate schedules, augmentations (tables keyed by the config's names);
* :mod:`.adversarial` — the per-batch steps of ``method: standard | pgd | trades``;
* :mod:`.loop` — :func:`train_model` and :func:`evaluate_accuracy`;
* :mod:`.pruning` — the segment trainer handed to the pruning pipeline;
* :mod:`.data_file` — a data file's (``--data FILE``) seeded train/test split;
* :mod:`.run` — :func:`run_training`: data, model, training, test accuracy, checkpoint(s), incremental stages.
"""

from kwta_robust.training.adversarial import METHODS, pgd_perturb
from kwta_robust.training.config import ActivationConfig, AdversarialConfig, IncrementalConfig, TrainConfig
from kwta_robust.training.loop import KEPT_INVARIANTS, EpochStats, TrainHistory, derive_seed, evaluate_accuracy, \
    invariants_needed, steps_per_epoch, train_model, unkept_invariants
from kwta_robust.training.pruning import LoopTrainer, final_lr, train_with_pruning
from kwta_robust.training.recipes import AUGMENTATIONS, OPTIMIZERS, SCHEDULES
from kwta_robust.training.run import StageResult, TrainResult, build_spec, check_spec, default_out, run_training, \
    stage_path

__all__ = [
    "AUGMENTATIONS", "KEPT_INVARIANTS", "METHODS", "OPTIMIZERS", "SCHEDULES", "ActivationConfig", "AdversarialConfig",
    "EpochStats", "IncrementalConfig", "LoopTrainer", "StageResult", "TrainConfig", "TrainHistory", "TrainResult",
    "build_spec", "check_spec", "default_out", "derive_seed", "evaluate_accuracy", "final_lr", "invariants_needed",
    "pgd_perturb", "run_training", "stage_path", "steps_per_epoch", "train_model", "train_with_pruning",
    "unkept_invariants",
]
