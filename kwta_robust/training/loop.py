"""The training loop: :func:`train_model` (optimizer, schedule, method and augmentation of a
:class:`~kwta_robust.training.config.TrainConfig`, seeded batch order, per-step and per-epoch hooks) and
:func:`evaluate_accuracy` (clean accuracy in eval mode, every module's mode restored).

Determinism: batch order, augmentation and PGD random starts come from explicit ``torch.Generator`` s derived
from ``(seed, stage)`` (:func:`derive_seed`); the caller's global RNG is never touched.

Modules that keep a training invariant of their own are kept as nupic.torch's training loop keeps them (Ahmad &
Scheinkman 2019; ``examples/mnist``): a module with ``rezero_weights()`` (:class:`KeepsWeightsSparse`: nupic's
``SparseWeights``, whose forward does not mask) has its masked weights set to zero again after every optimizer
step, and a module with ``update_boost_strength()`` (:class:`DecaysBoosting`: nupic's ``KWinners``) decays its
boosting once per epoch. Without them a ``SparseWeights`` layer trained here ends dense (the zoo's MNIST CNN, 20
epochs: its first convolution's 40% mask held 0.0% zeros) and β stays at its initial value.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from attacks.base import eval_mode
from kwta_robust.data import TensorData
from kwta_robust.errors import ConfigError
from kwta_robust.training.adversarial import METHODS
from kwta_robust.training.config import TrainConfig
from kwta_robust.training.recipes import AUGMENTATIONS, OPTIMIZERS, SCHEDULES

logger = logging.getLogger(__name__)


@runtime_checkable
class KeepsWeightsSparse(Protocol):
    """A module whose masked weights must be set to zero again after every optimizer step (nupic's
    ``SparseWeights``)."""

    def rezero_weights(self) -> None: ...


@runtime_checkable
class DecaysBoosting(Protocol):
    """A module whose boosting strength decays once per training epoch (nupic's ``KWinners``)."""

    def update_boost_strength(self) -> None: ...


#: The module invariants this loop keeps: each protocol's method name, the name a checkpoint's metadata lists
#: (``training_invariants``), so a sweep can tell a checkpoint trained before the loop kept one its model needs.
INVARIANT_PROTOCOLS: tuple[tuple[str, type], ...] = (("rezero_weights", KeepsWeightsSparse),
                                                     ("update_boost_strength", DecaysBoosting))
KEPT_INVARIANTS: tuple[str, ...] = tuple(name for name, _ in INVARIANT_PROTOCOLS)


def invariants_needed(model: nn.Module) -> list[str]:
    """The :data:`KEPT_INVARIANTS` whose protocol some module of ``model`` follows (sorted): what its training must
    have kept (the modules :func:`train_model` keeps them on)."""
    return sorted({name for name, protocol in INVARIANT_PROTOCOLS for m in model.modules()
                   if isinstance(m, protocol)})


def unkept_invariants(model: nn.Module, metadata: Mapping[str, Any]) -> list[str]:
    """The invariants ``model`` needs (:func:`invariants_needed`) that a checkpoint's ``metadata`` does not record
    its training as keeping (``training_invariants``: a list of method names; anything else records none)."""
    recorded = metadata.get("training_invariants")
    kept = [name for name in recorded if isinstance(name, str)] if isinstance(recorded, (list, tuple)) else []
    return [name for name in invariants_needed(model) if name not in kept]


@dataclass
class EpochStats:
    """One training epoch: mean loss, training accuracy, learning rate and wall time."""
    epoch: int
    loss: float
    train_accuracy: float
    lr: float
    seconds: float


@dataclass
class TrainHistory:
    """The epochs of a training run, in order."""
    epochs: list[EpochStats] = field(default_factory=list)

    def to_list(self) -> list[dict]:
        return [dataclasses.asdict(e) for e in self.epochs]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (``numpy.random.SeedSequence``): independent streams per stage/use."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch of :func:`train_model` on ``n`` samples (a final batch of one is dropped)."""
    return max(1, n // batch_size + (1 if n % batch_size > 1 else 0))


def train_model(
    model: nn.Module,
    train: TensorData,
    cfg: TrainConfig,
    device: torch.device | str,
    epoch_callback: Callable[[int, EpochStats, nn.Module], None] | None = None,
    after_step: Callable[[nn.Module, int], None] | None = None,
    stage: int = 0,
    schedule_epochs: tuple[int, int] | None = None,
) -> TrainHistory:
    """Train ``model`` (moved to ``device``) on ``train`` for ``cfg.epochs`` epochs with ``cfg``'s optimizer,
    schedule, method and augmentation.

    Batches: a fresh permutation per epoch from a generator seeded with ``derive_seed(cfg.seed, stage, 0)`` (a
    final batch of one sample is dropped, BatchNorm cannot train on it). ``after_step(model, step)`` runs after
    every optimizer step (global step count from 1; after the masked weights of :class:`KeepsWeightsSparse` modules
    are zeroed again); ``epoch_callback(epoch, stats, model)`` after every epoch (after :class:`DecaysBoosting`
    modules decayed their boosting; returning ``True`` stops training after that epoch, e.g. an Early-Bird ticket
    search).
    ``schedule_epochs=(offset, total)`` runs this call's ``cfg.epochs`` epochs as epochs ``offset, offset+1, …`` of
    a ``total``-epoch learning-rate schedule (learning-rate rewinding, Renda et al. 2020); default ``(0, cfg.epochs)``.
    Every module's train/eval flag is restored at the end.
    """
    device = torch.device(device)
    model.to(device)
    n = len(train)
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    offset_epochs, schedule_total = schedule_epochs if schedule_epochs is not None else (0, cfg.epochs)
    first_step = offset_epochs * per_epoch
    total_steps = max(1, schedule_total * per_epoch)
    optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg, cfg.lr)
    schedule = SCHEDULES[cfg.schedule]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule(min((first_step + step) / total_steps, 1.0), cfg))
    order_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, stage, 0))
    attack_gen = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, stage, 1))
    method = METHODS[cfg.method]
    augment = AUGMENTATIONS[cfg.augment]
    flags = [(m, m.training) for m in model.modules()]
    sparse = [m for m in model.modules() if isinstance(m, KeepsWeightsSparse)]
    boosting = [m for m in model.modules() if isinstance(m, DecaysBoosting)]
    history = TrainHistory()
    step = 0
    try:
        model.train()
        for epoch in range(cfg.epochs):
            start = time.perf_counter()
            perm = torch.randperm(n, generator=order_gen)
            batches = [b for b in perm.split(cfg.batch_size) if len(b) > 1 or n == 1]
            total_loss, correct, seen = 0.0, 0, 0
            lr = optimizer.param_groups[0]["lr"]
            for idx in tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=None):
                idx = idx.to(train.x.device)
                x = augment(train.x[idx].to(device), order_gen)
                y = train.y[idx].to(device)
                loss, logits = method(model, x, y, cfg, attack_gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for module in sparse:
                    module.rezero_weights()
                scheduler.step()
                step += 1
                if after_step is not None:
                    after_step(model, step)
                total_loss += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum().item())
                seen += len(y)
            for module in boosting:
                module.update_boost_strength()
            stats = EpochStats(epoch + 1, total_loss / max(seen, 1), correct / max(seen, 1), lr,
                               time.perf_counter() - start)
            history.epochs.append(stats)
            logger.info("epoch %d/%d: loss %.4f, train accuracy %.4f, lr %.2g (%.1fs)", stats.epoch, cfg.epochs,
                        stats.loss, stats.train_accuracy, stats.lr, stats.seconds)
            if epoch_callback is not None and epoch_callback(epoch + 1, stats, model) is True:
                break
    finally:
        for module, flag in flags:
            module.training = flag
    return history


def evaluate_accuracy(model: nn.Module, data: TensorData, batch_size: int = 500,
                      device: torch.device | str | None = None) -> float:
    """Clean accuracy of ``model`` on ``data`` in eval mode (each module's mode restored), without gradients.

    ``device`` defaults to the device of the model's parameters; batches of ``data`` are moved there.
    """
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    if len(data) == 0:
        raise ConfigError(f"{data.name}: cannot evaluate accuracy on an empty data set")
    correct = 0
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(data), batch_size):
            x = data.x[start:start + batch_size].to(device)
            y = data.y[start:start + batch_size].to(device)
            correct += int((model(x).argmax(dim=1) == y).sum().item())
    return correct / len(data)
