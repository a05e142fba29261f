"""Magnitude pruning: layer-wise or global, one-shot or iterative, with three ways to retrain.

Pruning (Han, Pool, Tran & Dally, NeurIPS 2015): the weights with the smallest ``|w|`` are removed, either in each
layer separately (layer-wise: every layer gets sparsity ``s``) or across all prunable layers at once (global).
Global pruning follows the layers' weight scales, so at high sparsity it can all but empty a layer whose weights are
small (e.g. a wide convolution with fan-in 400 next to fan-in-25 layers) — the "layer collapse" of Tanaka et al.,
NeurIPS 2020; the per-layer sparsities it chose are in the measured report.
Iterative pruning runs ``R`` rounds that each prune the same fraction ``1 - (1 - s)^(1/R)`` of the *remaining*
weights, retraining after each round; the last round lands exactly on ``s``
(:func:`~kwta_robust.sparsity.allocation.iterative_targets`).

Retraining after each round (``T`` = epochs of the original training, ``k`` = rewind epoch):

* ``"finetune"`` — keep the trained weights, train on at a constant small learning rate (by default the last
  learning rate of the original schedule, as the trainer reads it: ``kwta-robust train`` floors it at ``lr / 10``)
  — the classic fine-tuning baseline of Renda et al.
* ``"rewind-weights"`` — weight rewinding (Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019; rewinding
  to an early epoch ``k > 0``: Frankle, Dziugaite, Roy & Carbin, ICML 2020): the surviving weights — and every
  other parameter and buffer — are reset to their values after ``k`` epochs of the original run (``k = 0``: the
  initialisation), then trained for ``T - k`` epochs with the original schedule from epoch ``k``.
* ``"rewind-lr"`` — learning-rate rewinding (Renda, Frankle & Carbin, "Comparing Rewinding and Fine-tuning in
  Neural Network Pruning", ICLR 2020): keep the trained weights but replay the original learning-rate schedule
  from epoch ``k`` for ``T - k`` epochs.

The training itself is not done here: the caller passes a :class:`~kwta_robust.sparsity.segments.SegmentTrainer`
that runs one :class:`~kwta_robust.sparsity.segments.TrainSegment` (so this module works with any training loop).
Masks stay installed while retraining (pruned weights receive no gradient).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Literal, Mapping

import torch
from torch import Tensor, nn

from kwta_robust.sparsity.allocation import Scope, iterative_targets, prune_by_scores
from kwta_robust.sparsity.masks import effective_weight, enforce_masks, measure_sparsity
from kwta_robust.sparsity.segments import SegmentTrainer, TrainSegment

logger = logging.getLogger(__name__)

RetrainMode = Literal["finetune", "rewind-weights", "rewind-lr"]
RETRAIN_MODES: tuple[str, ...] = ("finetune", "rewind-weights", "rewind-lr")


def magnitude_scores(modules: Mapping[str, nn.Module]) -> dict[str, Tensor]:
    """``|w|`` of each layer's effective weight (higher = keep)."""
    with torch.no_grad():
        return {name: effective_weight(module).detach().abs() for name, module in modules.items()}


# ---------------------------------------------------------------------------------------------------------------
# rewinding
# ---------------------------------------------------------------------------------------------------------------
def _canonical(name: str) -> str | None:
    """State name with the pruning reparametrisation undone (``x.weight_orig`` → ``x.weight``); masks → None."""
    if name.endswith("_mask"):
        return None
    return name[: -len("_orig")] if name.endswith("_orig") else name


def capture_state(model: nn.Module) -> dict[str, Tensor]:
    """Copy of every parameter and buffer, keyed by canonical names (valid before and after pruning)."""
    state: dict[str, Tensor] = {}
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            key = _canonical(name)
            if key is not None:
                state[key] = tensor.detach().clone()
    return state


def rewind(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Restore parameters and buffers from :func:`capture_state`; masks are kept and re-applied, so surviving
    connections get their saved values and pruned ones stay 0."""
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            key = _canonical(name)
            if key is None:
                continue
            if key not in state:
                raise KeyError(f"rewind point has no value for {key!r}")
            tensor.copy_(state[key])
        enforce_masks(dict(model.named_modules()))


# ---------------------------------------------------------------------------------------------------------------
# the prune-retrain loop
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoundRecord:
    """What one pruning round did: cumulative target and measured sparsity of the pruned layers."""

    round: int
    target: float
    measured: float
    retrain: str

    def to_dict(self) -> dict[str, object]:
        return {"round": self.round, "target": self.target, "measured": self.measured, "retrain": self.retrain}


def retrain_segment(mode: RetrainMode, round_index: int, train_epochs: int, rewind_epoch: int,
                    retrain_epochs: int | None, finetune_lr: float | None) -> TrainSegment:
    """The training run after pruning round ``round_index`` (1-based) for ``mode`` (see the module docstring)."""
    label = f"retrain-{round_index}"
    if mode == "finetune":
        epochs = retrain_epochs if retrain_epochs is not None else train_epochs - rewind_epoch
        return TrainSegment(label, epochs, schedule_offset=train_epochs,
                            constant_lr="final" if finetune_lr is None else finetune_lr)
    if mode in ("rewind-weights", "rewind-lr"):
        return TrainSegment(label, train_epochs - rewind_epoch, schedule_offset=rewind_epoch)
    raise ValueError(f"retrain mode must be one of {', '.join(RETRAIN_MODES)}, got {mode!r}")


def prune_and_retrain(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    trainer: SegmentTrainer,
    *,
    sparsity: float,
    scope: Scope = "layerwise",
    rounds: int = 1,
    retrain: RetrainMode = "finetune",
    train_epochs: int,
    rewind_epoch: int = 0,
    retrain_epochs: int | None = None,
    finetune_lr: float | None = None,
    scores_fn: Callable[[Mapping[str, nn.Module]], Mapping[str, Tensor]] = magnitude_scores,
) -> list[RoundRecord]:
    """Train dense for ``train_epochs``, then ``rounds`` × (prune to the next cumulative target, retrain).

    The rewind point (state after ``rewind_epoch`` epochs of the dense run) is captured only when ``retrain`` is
    ``"rewind-weights"``. With ``retrain_epochs=0`` and ``retrain="finetune"`` no retraining happens (pure
    one-shot pruning of the trained model). Returns one :class:`RoundRecord` per round.
    """
    targets = iterative_targets(sparsity, rounds)
    if retrain not in RETRAIN_MODES:
        raise ValueError(f"retrain mode must be one of {', '.join(RETRAIN_MODES)}, got {retrain!r}")
    if not 0 <= rewind_epoch < train_epochs:
        raise ValueError(f"rewind epoch must be in [0, {train_epochs}), got {rewind_epoch}")
    snapshot: dict[str, dict[str, Tensor]] = {}

    def capture(m: nn.Module, epochs_done: int) -> None:
        if epochs_done == rewind_epoch:
            snapshot["state"] = capture_state(m)

    want_rewind = retrain == "rewind-weights"
    if want_rewind and rewind_epoch == 0:
        snapshot["state"] = capture_state(model)
    trainer(model, TrainSegment("dense", train_epochs),
            epoch_callback=capture if want_rewind and rewind_epoch > 0 else None)
    if want_rewind and "state" not in snapshot:
        raise RuntimeError(f"the trainer never reported epoch {rewind_epoch}: no rewind point was captured")

    records = []
    names = list(modules)
    for index, target in enumerate(targets, start=1):
        prune_by_scores(modules, scores_fn(modules), target, scope)
        if want_rewind:
            rewind(model, snapshot["state"])
        segment = retrain_segment(retrain, index, train_epochs, rewind_epoch, retrain_epochs, finetune_lr)
        if segment.epochs > 0:
            trainer(model, segment)
        enforce_masks(modules)
        measured = measure_sparsity(model).overall_of(names)
        logger.info("pruning round %d/%d: target sparsity %.4f, measured %.4f (%s)",
                    index, len(targets), target, measured, retrain)
        records.append(RoundRecord(index, target, measured, retrain))
    return records
