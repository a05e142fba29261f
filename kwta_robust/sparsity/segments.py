"""The interface between pruning and training: a pruning method trains only through a :class:`SegmentTrainer`
(one :class:`TrainSegment` at a time), handed over in a :class:`PruningContext`, so this package works with any
training loop and never imports one (:mod:`kwta_robust.training.pruning` provides the trainer of
``kwta-robust train``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Protocol, Sequence, Union

from torch import Tensor, nn

EpochCallback = Callable[[nn.Module, int], Optional[bool]]
StepHook = Callable[[nn.Module, int], None]


@dataclass(frozen=True)
class TrainSegment:
    """One training run of a pruning schedule.

    ``schedule_offset``: epoch of the original learning-rate schedule this run starts at (0 = from the start;
    the run covers schedule epochs ``offset … offset + epochs - 1``). ``constant_lr``: ``None`` follows the
    schedule; ``"final"`` uses the schedule's last learning rate throughout; a float uses that rate.
    """

    label: str
    epochs: int
    schedule_offset: int = 0
    constant_lr: Union[float, Literal["final"], None] = None


class SegmentTrainer(Protocol):
    """Runs ``segment`` on ``model`` in place.

    ``epoch_callback(model, epochs_done)`` is called after each epoch of the segment (``epochs_done`` from 1); when
    it returns ``True`` the segment stops there (Early-Bird search);
    ``step_hook(model, steps_done)`` after each optimiser step (``steps_done`` from 1, counted within the segment).
    """

    def __call__(self, model: nn.Module, segment: TrainSegment, *, epoch_callback: EpochCallback | None = None,
                 step_hook: StepHook | None = None) -> None: ...


@dataclass
class PruningContext:
    """What a pruning method needs from the training run.

    ``trainer`` runs one training segment; ``train_epochs`` is ``T`` of the original schedule and
    ``steps_per_epoch`` the optimiser steps per epoch (RigL's schedule); ``score_batches()`` returns the
    mini-batches ``[(x, y), ...]`` (on the model's device) for SNIP/GraSP scores; ``seed`` seeds random masks.
    """

    trainer: SegmentTrainer
    train_epochs: int
    steps_per_epoch: int
    score_batches: Callable[[int], Sequence[tuple[Tensor, Tensor]]]
    seed: int = 0
