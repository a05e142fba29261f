"""RigL dynamic sparse training (Evci, Gale, Menick, Castro & Elsen, "Rigging the Lottery: Making All Tickets
Winners", ICML 2020).

The network is sparse from the first step: every prunable layer ``l`` starts from a uniformly random mask with
exactly ``round(s_l · n_l)`` zeros and keeps that sparsity for the whole run. The per-layer sparsities ``s_l`` follow
the paper's distributions (:func:`~kwta_robust.sparsity.allocation.layer_sparsities`): ``"erk"`` (default, the
paper's best: small layers such as the first convolution and the classifier stay denser, overall sparsity ``s``) or
``"uniform"`` (``s_l = s`` for every selected layer). Every ``ΔT`` optimiser steps ``t`` until
``t_end = end_fraction · T``, each layer

1. **drops** ``k = f(t) · n_active`` of its active connections with the smallest weight magnitude,
2. **grows** the same number among the inactive ones (just-dropped included) with the largest *dense* gradient
   magnitude ``|∂L/∂W|`` of the latest training step; connections that were inactive before the update start at
   weight 0 (a dropped-and-regrown connection keeps its value). One refinement: ``k`` is capped at the number of
   inactive connections whose gradient is non-zero — a zero gradient (e.g. into a dead ReLU unit) carries no
   signal, and growing such a connection would only plant a weight that stays 0,

with the cosine-decayed update fraction ``f(t) = α/2 · (1 + cos(π t / t_end))`` (α = 0.3, ΔT = 100,
end_fraction = 0.75 as in the paper). Layer sparsity is therefore constant across updates.

Dense gradients: the masked layers compute with ``weight = weight_orig * weight_mask``
(:mod:`torch.nn.utils.prune`); a forward hook registers a tensor hook on that effective weight during training
forwards, so the gradient the optimiser step used — dense, including inactive entries — is kept per layer for the
next update without any extra forward/backward pass (summed over the step's train-mode forwards: TRADES runs two).

Use: ``rigl = RigL(modules, sparsity, total_steps, seed=...)``; ``rigl.install()``; pass ``rigl.after_step`` as the
training loop's per-step hook ``after_step(model, step)`` (``step`` = number of optimiser steps done, from 1);
``rigl.remove()`` at the end (then :func:`~kwta_robust.sparsity.masks.make_permanent`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from kwta_robust.sparsity.allocation import DISTRIBUTIONS, check_sparsity, layer_sparsities, random_masks
from kwta_robust.sparsity.masks import Masks, apply_masks, current_masks, effective_weight, set_mask, trainable_weight

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RigLUpdate:
    """One mask update: the step, the update fraction ``f(t)`` and connections moved per layer."""

    step: int
    fraction: float
    moved: dict[str, int] = field(default_factory=dict)

    @property
    def total_moved(self) -> int:
        return sum(self.moved.values())


def cosine_update_fraction(step: int, end_step: int, alpha: float) -> float:
    """``α/2 · (1 + cos(π · step / end_step))`` for ``step < end_step``, else 0."""
    if step >= end_step:
        return 0.0
    return alpha / 2.0 * (1.0 + math.cos(math.pi * step / end_step))


class RigL:
    """RigL mask updates as a per-step training hook (see the module docstring).

    ``modules``: layer name → prunable module; ``sparsity`` in ``[0, 1)`` overall, spread over the layers by
    ``distribution`` (``"erk"`` or ``"uniform"``); ``total_steps``: optimiser steps of the whole run (``T``); ``seed``
    seeds the initial random masks.
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        sparsity: float,
        total_steps: int,
        update_interval: int = 100,
        alpha: float = 0.3,
        end_fraction: float = 0.75,
        seed: int = 0,
        distribution: str = "erk",
    ) -> None:
        self.sparsity = check_sparsity(sparsity)
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"RigL distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
        self.distribution = distribution
        for key, value, ok in (
            ("total_steps", total_steps, isinstance(total_steps, int) and total_steps >= 1),
            ("update_interval", update_interval, isinstance(update_interval, int) and update_interval >= 1),
            ("alpha", alpha, 0.0 < alpha <= 1.0),
            ("end_fraction", end_fraction, 0.0 < end_fraction <= 1.0),
        ):
            if not ok:
                raise ValueError(f"RigL {key} out of range: {value!r}")
        self.modules = dict(modules)
        shapes = {name: effective_weight(m).shape for name, m in self.modules.items()}
        self.layer_sparsity = layer_sparsities(shapes, self.sparsity, distribution)
        self.total_steps = total_steps
        self.update_interval = update_interval
        self.alpha = alpha
        self.end_step = int(end_fraction * total_steps)
        self.seed = seed
        self.history: list[RigLUpdate] = []
        self._grads: dict[str, Tensor] = {}
        self._finished: set[str] = set()  # layers whose kept gradient is a finished step's: the next one replaces it
        self._handles: list[RemovableHandle] = []

    # -- lifecycle -------------------------------------------------------------------------------------------
    def install(self, masks: Masks | None = None) -> Masks:
        """Apply the initial masks (seeded random, per-layer sparsity from the distribution, unless given) and the
        gradient hooks; returns the masks installed."""
        if masks is None:
            generator = torch.Generator().manual_seed(self.seed)
            shapes = {name: effective_weight(m).shape for name, m in self.modules.items()}
            device = trainable_weight(next(iter(self.modules.values()))).device
            masks = random_masks(shapes, self.layer_sparsity, generator, device)
        apply_masks(self.modules, masks)
        self.remove()
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._capture_hook(name)))
        return current_masks(self.modules)

    def remove(self) -> None:
        """Remove the gradient hooks (masks stay; fold them with ``make_permanent``)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._grads.clear()
        self._finished.clear()

    def _capture_hook(self, name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            weight = module.weight
            if module.training and torch.is_grad_enabled() and isinstance(weight, Tensor) and weight.requires_grad:
                def store(grad: Tensor) -> None:
                    if name in self._grads and name not in self._finished:  # another forward of the same step
                        self._grads[name] = self._grads[name] + grad.detach()
                    else:
                        self._grads[name] = grad.detach()
                        self._finished.discard(name)

                weight.register_hook(store)

        return hook

    # -- schedule --------------------------------------------------------------------------------------------
    def is_update_step(self, step: int) -> bool:
        """Updates happen at ``step = ΔT, 2ΔT, …`` strictly before ``t_end``."""
        return step > 0 and step % self.update_interval == 0 and step < self.end_step

    def after_step(self, model: nn.Module, step: int) -> None:
        """Per-step training hook: update the masks at update steps (``step`` = optimiser steps done)."""
        if self.is_update_step(step):
            self.update(step)
        self._finished = set(self._grads)

    # -- the update ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, step: int) -> RigLUpdate:
        """Drop-and-grow every layer once with the fraction ``f(step)``; returns what moved."""
        missing = [name for name in self.modules if name not in self._grads]
        if missing:
            raise RuntimeError(
                f"RigL update at step {step} has no dense gradient for {', '.join(missing)}: "
                "call install() before training and after_step() after each optimiser step"
            )
        fraction = cosine_update_fraction(step, self.end_step, self.alpha)
        moved: dict[str, int] = {}
        for name, module in self.modules.items():
            moved[name] = self._update_layer(module, self._grads[name], fraction)
        record = RigLUpdate(step, fraction, moved)
        self.history.append(record)
        logger.debug("RigL step %d: fraction %.4f, moved %d connections", step, fraction, record.total_moved)
        return record

    def _update_layer(self, module: nn.Module, grad: Tensor, fraction: float) -> int:
        old = module.weight_mask.detach().flatten() != 0  # type: ignore[union-attr]
        flat_grad = grad.detach().flatten().float()
        n_active = int(old.sum().item())
        # a connection whose dense gradient is exactly 0 (e.g. into a dead ReLU unit) has no signal to grow on:
        # swap at most as many connections as there are inactive ones with a gradient, so sparsity stays exact
        growable = int(((flat_grad != 0) & ~old).sum().item())
        k = min(int(round(fraction * n_active)), growable)
        if k == 0:
            return 0
        magnitude = effective_weight(module).detach().abs().flatten().float()
        # drop: the k smallest-magnitude active connections (inactive ones are never candidates)
        drop_score = magnitude.masked_fill(~old, float("inf"))
        dropped = torch.sort(drop_score, stable=True).indices[:k]
        kept = old.clone()
        kept[dropped] = False
        # grow: the k largest dense-gradient magnitudes among connections inactive after the drop
        grow_score = flat_grad.abs().masked_fill(kept, float("-inf"))
        grown = torch.sort(grow_score, descending=True, stable=True).indices[:k]
        new = kept.clone()
        new[grown] = True
        fresh = new & ~old
        weight = module.weight_orig  # type: ignore[union-attr]
        weight.view(-1).masked_fill_(fresh, 0.0)  # new connections start at zero
        set_mask(module, new.view_as(weight))
        return int(fresh.sum().item())
