"""The ReLUs a model's forward applies, counted by the layer probe (:mod:`kwta_robust.detect`): ``relu_calls``.

A model of one's own often writes its activations as function calls (``F.relu(self.bn1(self.conv1(x)))`` in a
kuangliu-style ResNet, Xiao et al.'s ReLU twin), which the describer (:func:`kwta_robust.models.describe_model`),
reading modules, does not see: it recorded such a model as activation ``none``. And it counts ``nn.ReLU``
modules, called or not (Xiao et al.'s kWTA ResNet keeps one in every block and calls it only with ``use_relu``).
:func:`relu_calls` runs one forward of the model on the probe's batch ``x`` ``[B, ...]`` (eval mode, no
gradients, seeded RNG restored after) under a :class:`~torch.overrides.TorchFunctionMode` and counts the ReLUs
applied to a floating-point tensor of the batch (first dimension ``B``): ``F.relu`` / ``F.relu_``, ``torch.relu`` /
``torch.relu_``, ``Tensor.relu`` / ``relu_``, an ``nn.ReLU`` module (its forward calls ``F.relu``: one call each
time it runs) and a clamp at zero from below with no upper bound (``clamp(min=0)``, ``clamp_min(0)``, ``clip``),
which computes the same function. Not counted: calls made inside a module of ``accounted`` (the top-k gates the
probe found, whose own ReLU is part of the gate), and other activations with a kink at 0 (``relu6``,
``leaky_relu``, ``F.threshold``, ``torch.maximum(x, 0)``).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from attacks.base import eval_mode, rng_scope

#: ReLU calls (function and method forms, in place too), read-only.
RELU_OPS: frozenset[Callable[..., Any]] = frozenset({F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_})
#: Clamps: a ReLU where the lower bound is 0 and there is no upper one. Value: the position of ``min`` and of
#: ``max`` among the positional arguments (``max`` ``None``: the operation has none).
CLAMP_OPS: Mapping[Callable[..., Any], tuple[int, int | None]] = MappingProxyType({
    **{fn: (1, 2) for fn in (torch.clamp, Tensor.clamp, Tensor.clamp_, torch.clip, Tensor.clip, Tensor.clip_)},
    **{fn: (1, None) for fn in (torch.clamp_min, Tensor.clamp_min, Tensor.clamp_min_)},
})


def _argument(args: tuple, kwargs: Mapping[str, Any], position: int | None, name: str) -> Any:
    if position is not None and len(args) > position:
        return args[position]
    return kwargs.get(name)


def is_relu_call(func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any] | None) -> bool:
    """Whether ``func(*args, **kwargs)`` applies a ReLU (:data:`RELU_OPS`, or a clamp of :data:`CLAMP_OPS` at
    ``min`` 0 with no ``max``)."""
    if func in RELU_OPS:
        return True
    if func not in CLAMP_OPS:
        return False
    kwargs = kwargs or {}
    low_at, high_at = CLAMP_OPS[func]
    low, high = _argument(args, kwargs, low_at, "min"), _argument(args, kwargs, high_at, "max")
    return high is None and isinstance(low, (int, float)) and not isinstance(low, bool) and low == 0


class _ReluWatch(TorchFunctionMode):
    """Counts the ReLU calls on the batch (:func:`is_relu_call`) made while no module of ``accounted`` runs."""

    def __init__(self, batch: int, inside: list[str]) -> None:
        super().__init__()
        self.batch, self.inside, self.calls = batch, inside, 0

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None):
        first = args[0] if args else None
        if not self.inside and isinstance(first, Tensor) and first.is_floating_point() and first.ndim > 0 \
                and first.shape[0] == self.batch and is_relu_call(func, args, kwargs):
            self.calls += 1
        return func(*args, **(kwargs or {}))


def relu_calls(model: nn.Module, x: Tensor, accounted: Collection[str] = (), seed: int = 0) -> int:
    """The ReLUs one forward of ``model`` on ``x`` ``[B, ...]`` applies outside the modules named in ``accounted``
    (see the module docstring); every hook is removed after and the model is left as it was."""
    inside: list[str] = []
    handles = []

    def enter(_module: nn.Module, _args: tuple) -> None:
        inside.append("")

    def leave(_module: nn.Module, _args: tuple, _output: Any) -> None:  # returns None: the output is kept
        inside.pop()

    try:
        for name, module in model.named_modules():
            if name and name in accounted:
                handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
        watch = _ReluWatch(int(x.shape[0]), inside)
        with eval_mode(model), rng_scope(seed), torch.no_grad(), watch:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return watch.calls
