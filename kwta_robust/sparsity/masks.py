"""Mask bookkeeping for unstructured weight pruning, on top of :mod:`torch.nn.utils.prune`.

A pruned layer carries ``weight_orig`` (the trainable parameter), a ``weight_mask`` buffer (1 = kept, 0 = pruned)
and a forward pre-hook that recomputes ``weight = weight_orig * weight_mask`` — the reparametrisation of
``torch.nn.utils.prune``. Gradients reach only the kept entries of ``weight_orig``, so masks survive training.
:func:`make_permanent` removes the reparametrisation: the layer gets back a plain ``weight`` parameter holding
exact zeros, and its ``state_dict`` has no ``weight_orig``/``weight_mask`` (what checkpoints store).

Which layers: ``Conv2d`` and ``Linear`` weights by default (the ``layer_types`` argument widens or narrows this).
The final classifier — the last selected module in registration order, e.g. ``fc`` of a ResNet — is pruned too
by default (``include_classifier=True``), as in Han et al. 2015, SNIP, GraSP and the lottery-ticket experiments on
small networks; pass ``include_classifier=False`` to keep it dense. Biases and normalisation parameters are never
pruned.

Sparsity is always *measured* from the tensors: the fraction of exact zeros of each layer's effective weight
(``weight_orig * weight_mask`` while masked, ``weight`` otherwise), never taken from the requested target.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

logger = logging.getLogger(__name__)

DEFAULT_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
#: Layers whose weights count in measured sparsity reports (every convolution and linear layer, classifier included;
#: the same set as :func:`kwta_robust.models.weight_sparsity`).
MEASURED_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)

#: layer-type names accepted in configs (``prunable_layers: [conv2d, linear]``).
LAYER_TYPE_NAMES: dict[str, type[nn.Module]] = {
    "conv1d": nn.Conv1d,
    "conv2d": nn.Conv2d,
    "conv3d": nn.Conv3d,
    "linear": nn.Linear,
}

Masks = dict[str, Tensor]
"""Layer name (as in ``model.named_modules()``) → boolean keep-mask shaped like that layer's weight."""


def layer_types_from_names(names: Iterable[str]) -> tuple[type[nn.Module], ...]:
    """Map config names (``"conv2d"``, ``"linear"``, …) to module classes; raises ``KeyError`` naming the bad one."""
    types = []
    for name in names:
        key = name.strip().lower()
        if key not in LAYER_TYPE_NAMES:
            raise KeyError(name)
        types.append(LAYER_TYPE_NAMES[key])
    return tuple(dict.fromkeys(types))


def prunable_modules(
    model: nn.Module,
    layer_types: tuple[type[nn.Module], ...] = DEFAULT_LAYER_TYPES,
    include_classifier: bool = True,
) -> dict[str, nn.Module]:
    """The modules whose ``weight`` is pruned, by name, in registration order.

    The classifier is the last module of ``layer_types`` in registration order; it is left out when
    ``include_classifier`` is false. Raises ``ValueError`` when nothing is left to prune.
    """
    modules = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, layer_types) and _has_weight(module)
    }
    if modules and not include_classifier:
        modules.pop(next(reversed(modules)))
    if not modules:
        kinds = ", ".join(t.__name__ for t in layer_types)
        raise ValueError(f"the model has no prunable layers of type {kinds}")
    return modules


def _has_weight(module: nn.Module) -> bool:
    return (isinstance(getattr(module, "weight_orig", None), Tensor)
            or isinstance(getattr(module, "weight", None), Tensor))


def is_masked(module: nn.Module) -> bool:
    """Whether ``module.weight`` is currently reparametrised by a pruning mask."""
    return prune.is_pruned(module) and hasattr(module, "weight_mask")


def trainable_weight(module: nn.Module) -> nn.Parameter:
    """The parameter the optimiser updates: ``weight_orig`` while masked, ``weight`` otherwise."""
    return module.weight_orig if is_masked(module) else module.weight  # type: ignore[return-value]


def effective_weight(module: nn.Module) -> Tensor:
    """The weight the layer computes with, recomputed from the tensors (``weight_orig * weight_mask`` if masked)."""
    if is_masked(module):
        return module.weight_orig * module.weight_mask  # type: ignore[operator]
    return module.weight  # type: ignore[return-value]


def current_masks(modules: Mapping[str, nn.Module]) -> Masks:
    """Boolean keep-masks: the ``weight_mask`` buffer of masked layers, ``weight != 0`` for the others."""
    masks: Masks = {}
    with torch.no_grad():
        for name, module in modules.items():
            if is_masked(module):
                masks[name] = module.weight_mask.detach() != 0  # type: ignore[union-attr]
            else:
                masks[name] = module.weight.detach() != 0  # type: ignore[union-attr]
    return masks


def set_mask(module: nn.Module, mask: Tensor) -> None:
    """Install (or replace) the keep-mask of ``module.weight``; pruned entries of the trainable weight become 0.

    Zeroing the trainable entries means a connection that is later regrown (RigL) starts from 0, and a pruned
    layer never carries stale values under its mask. ``mask`` is boolean (or 0/1) shaped like the weight.
    """
    weight = trainable_weight(module)
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(weight.shape)}")
    keep = mask.to(device=weight.device, dtype=torch.bool)
    with torch.no_grad():
        weight.masked_fill_(~keep, 0.0)
        if is_masked(module):
            module.weight_mask.copy_(keep.to(module.weight_mask.dtype))  # type: ignore[union-attr]
            # keep the plain attribute consistent until the next forward recomputes it
            module.weight = module.weight_orig * module.weight_mask  # type: ignore[operator]
        else:
            prune.custom_from_mask(module, "weight", keep.to(weight.dtype))


def apply_masks(modules: Mapping[str, nn.Module], masks: Mapping[str, Tensor]) -> None:
    """:func:`set_mask` for every layer named in ``masks`` (each name must be a key of ``modules``)."""
    unknown = sorted(set(masks) - set(modules))
    if unknown:
        raise KeyError(f"masks for unknown layers: {', '.join(unknown)}")
    for name, mask in masks.items():
        set_mask(modules[name], mask)


def enforce_masks(modules: Mapping[str, nn.Module]) -> None:
    """Re-zero the trainable weights under each mask (after an optimiser step with weight decay or momentum)."""
    with torch.no_grad():
        for module in modules.values():
            if is_masked(module):
                module.weight_orig.mul_(module.weight_mask)  # type: ignore[operator]


def make_permanent(model: nn.Module) -> list[str]:
    """Fold every pruning mask into a plain ``weight`` parameter (exact zeros) and drop the reparametrisation.

    Returns the names of the layers that were masked. Afterwards ``state_dict()`` holds ``<layer>.weight`` only.
    The same ``nn.Parameter`` object is kept, so an optimiser built earlier still updates it.
    """
    done = []
    for name, module in model.named_modules():
        if is_masked(module):
            prune.remove(module, "weight")
            done.append(name)
    return done


@dataclass(frozen=True)
class LayerSparsity:
    """Exact-zero count of one layer's effective weight."""

    zeros: int
    total: int

    @property
    def fraction(self) -> float:
        return self.zeros / self.total if self.total else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Measured weight sparsity: per layer and overall (zeros / weights over all reported layers)."""

    layers: dict[str, LayerSparsity] = field(default_factory=dict)

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers.values())

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers.values())

    @property
    def overall(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def overall_of(self, names: Iterable[str]) -> float:
        """Zeros / weights over the named layers only (e.g. the pruned ones when the classifier was kept)."""
        chosen = [self.layers[n] for n in names]
        total = sum(layer.total for layer in chosen)
        return sum(layer.zeros for layer in chosen) / total if total else 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``{"overall": float, "zeros": int, "total": int, "layers": {name: {...}}}``."""
        return {
            "overall": self.overall,
            "zeros": self.zeros,
            "total": self.total,
            "layers": {
                name: {"sparsity": layer.fraction, "zeros": layer.zeros, "total": layer.total}
                for name, layer in self.layers.items()
            },
        }


def measure_sparsity(
    model: nn.Module,
    layer_types: tuple[type[nn.Module], ...] = MEASURED_LAYER_TYPES,
) -> SparsityReport:
    """Fraction of exact zeros in the weight of every ``layer_types`` module (classifier included) and overall."""
    layers: dict[str, LayerSparsity] = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, layer_types) and _has_weight(module):
                weight = effective_weight(module)
                layers[name] = LayerSparsity(int((weight == 0).sum().item()), weight.numel())
    return SparsityReport(layers)


def mask_distance(a: Masks, b: Masks) -> float:
    """Normalised Hamming distance between two mask sets over the same layers: differing entries / all entries."""
    if set(a) != set(b):
        raise ValueError("mask sets cover different layers")
    differ = sum(int((a[n] != b[n]).sum().item()) for n in a)
    total = sum(a[n].numel() for n in a)
    return differ / total if total else 0.0
