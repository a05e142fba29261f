"""Pruned training: the generic segment trainer of the pruning pipeline (:class:`LoopTrainer`, a
:class:`~kwta_robust.sparsity.segments.SegmentTrainer` running :func:`~kwta_robust.training.loop.train_model`) and
:func:`train_with_pruning`, which :func:`~kwta_robust.training.run.run_training` calls when ``TrainConfig.pruning``
is set. :mod:`kwta_robust.sparsity` stays a library below training: it only sees the trainer.

Each :class:`~kwta_robust.sparsity.segments.TrainSegment` becomes one
:func:`~kwta_robust.training.loop.train_model` call with the run's optimizer, method (standard / PGD / TRADES)
and augmentation:

* a scheduled segment replays the original learning-rate schedule of ``cfg.epochs`` epochs from epoch
  ``schedule_offset`` (``train_model(..., schedule_epochs=(offset, cfg.epochs))``);
* a fine-tuning segment (``constant_lr``) runs at a constant rate: ``pruning.finetune_lr`` if set, else the
  schedule's final rate floored at ``lr / 10``. Renda et al. fine-tune at the final rate of the original schedule;
  a cosine schedule ends near 0, where fine-tuning barely moves the weights (small CNN on mnist5k, Adam 1e-3,
  cosine, 10 epochs, 80 % layer-wise magnitude pruning, 10 fine-tuning epochs: 94.9 % test accuracy at
  ``lr / 100``, 96.3 % at ``lr / 10``).

The first segment uses the batch-order stage 0 (the dense phase of magnitude pruning is the same run as unpruned
training with the same seed); later segments use stages 101, 102, … (:data:`SEGMENT_STAGE` plus the segment's
index) so each has its own seeded batch order.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import Tensor, nn

from kwta_robust.data import TensorData
from kwta_robust.sparsity.pipeline import PruningOutcome, train_pruned
from kwta_robust.sparsity.segments import EpochCallback, PruningContext, StepHook, TrainSegment
from kwta_robust.training.config import TrainConfig
from kwta_robust.training.loop import TrainHistory, derive_seed, steps_per_epoch, train_model
from kwta_robust.training.recipes import SCHEDULES

logger = logging.getLogger(__name__)

#: Seed stage of the SNIP/GraSP scoring batches (distinct from every training stage).
SCORE_STAGE = 99
#: Seed stage base of the segments after the first: segment ``i`` (0-based, ``i >= 1``) uses stage ``100 + i``.
SEGMENT_STAGE = 100
#: Default fine-tuning rate floor, as a fraction of the run's learning rate (see the module docstring).
FINETUNE_FLOOR = 0.1


def final_lr(cfg: TrainConfig, steps: int) -> float:
    """The learning rate of the last of ``cfg.epochs * steps`` optimizer steps of ``cfg``'s schedule, floored at
    ``cfg.lr / 10`` (:data:`FINETUNE_FLOOR`)."""
    total = max(1, cfg.epochs * steps)
    return max(cfg.lr * SCHEDULES[cfg.schedule]((total - 1) / total, cfg), cfg.lr * FINETUNE_FLOOR)


class LoopTrainer:
    """:class:`SegmentTrainer` running :func:`train_model` on ``train`` with ``cfg`` on ``device``.

    ``history`` collects every epoch of every segment; ``segments`` what was run.
    """

    def __init__(self, train: TensorData, cfg: TrainConfig, device: torch.device) -> None:
        self.train = train
        self.cfg = dataclasses.replace(cfg, pruning=None)
        self.device = device
        self.history = TrainHistory()
        self.segments: list[TrainSegment] = []

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.train), self.cfg.batch_size)

    def segment_config(self, segment: TrainSegment) -> tuple[TrainConfig, tuple[int, int] | None]:
        """The config of one segment and its ``schedule_epochs`` window (None for a constant rate)."""
        if segment.constant_lr is None:
            return dataclasses.replace(self.cfg, epochs=segment.epochs), (segment.schedule_offset, self.cfg.epochs)
        lr = final_lr(self.cfg, self.steps_per_epoch) if segment.constant_lr == "final" else float(segment.constant_lr)
        return dataclasses.replace(self.cfg, epochs=segment.epochs, schedule="constant", lr=lr), None

    def __call__(self, model: nn.Module, segment: TrainSegment, *, epoch_callback: EpochCallback | None = None,
                 step_hook: StepHook | None = None) -> None:
        index = len(self.segments)
        self.segments.append(segment)
        seg_cfg, window = self.segment_config(segment)
        logger.info("training segment %r: %d epochs, lr %s", segment.label, segment.epochs,
                    f"constant {seg_cfg.lr:.3g}" if window is None else f"schedule from epoch {window[0]}")
        if epoch_callback is not None:
            def callback(epoch: int, stats: Any, m: nn.Module) -> bool:
                return bool(epoch_callback(m, epoch))
        else:
            callback = None
        history = train_model(model, self.train, seg_cfg, self.device, epoch_callback=callback, after_step=step_hook,
                              stage=0 if index == 0 else SEGMENT_STAGE + index, schedule_epochs=window)
        self.history.epochs.extend(history.epochs)


def score_batches(train: TensorData, cfg: TrainConfig, device: torch.device, n: int) -> list[tuple[Tensor, Tensor]]:
    """``n`` mini-batches of a seeded permutation of ``train`` (SNIP/GraSP scores), on ``device``."""
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, SCORE_STAGE))
    perm = torch.randperm(len(train), generator=gen)[: n * cfg.batch_size]
    return [(train.x[idx].to(device), train.y[idx].to(device)) for idx in perm.split(cfg.batch_size)]


def train_with_pruning(model: nn.Module, train: TensorData, cfg: TrainConfig,
                       device: torch.device) -> tuple[TrainHistory, PruningOutcome, list[TrainSegment]]:
    """Train ``model`` with ``cfg.pruning`` (required); returns the history, the measured outcome (masks
    already permanent) and the segments run."""
    if cfg.pruning is None:
        raise ValueError("train_with_pruning needs cfg.pruning")
    trainer = LoopTrainer(train, cfg, device)
    ctx = PruningContext(
        trainer=trainer,
        train_epochs=cfg.epochs,
        steps_per_epoch=trainer.steps_per_epoch,
        score_batches=lambda n: score_batches(train, cfg, device, n),
        seed=cfg.seed,
    )
    outcome = train_pruned(model, cfg.pruning, ctx)
    return trainer.history, outcome, trainer.segments
