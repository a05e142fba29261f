"""The ReLUs a model's forward applies, counted by the layer probe (:mod:`kwta_robust.detect`): ``relu_calls``.

A model of one's own often writes its activations as function calls (``F.relu(self.bn1(self.conv1(x)))`` in a
kuangliu-style ResNet, Xiao et al.'s ReLU twin), which the describer (:func:`kwta_robust.models.describe_model`),
reading modules, does not see: it recorded such a model as activation ``none``. And it counts ``nn.ReLU``
modules, called or not (Xiao et al.'s kWTA ResNet keeps one in every block and calls it only with ``use_relu``).
:class:`ReluCount` counts, in the one forward of the model on the probe's batch ``x`` ``[B, ...]`` that the
selections' watch already runs (:func:`kwta_robust.detect_selections.selections_outside`: eval mode, no gradients,
seeded RNG restored after; it tells each call the stack of modules whose ``forward`` is running), the ReLUs
applied to a floating-point tensor of the batch (first dimension ``B``): ``F.relu`` / ``F.relu_``, ``torch.relu`` /
``torch.relu_``, ``Tensor.relu`` / ``relu_``, an ``nn.ReLU`` module (its forward calls ``F.relu``: one call each
time it runs) and a clamp at zero from below with no upper bound (``clamp(min=0)``, ``clamp_min(0)``, ``clip``),
which computes the same function. Not counted: calls made inside a module of ``accounted`` (the top-k gates the
probe found, whose own ReLU is part of the gate), and other activations with a kink at 0 (``relu6``,
``leaky_relu``, ``F.threshold``, ``torch.maximum(x, 0)``). :func:`relu_calls` is that count on its own.
In the same forward :class:`ReluCount` counts the other activations applied to the batch, by kind
(:data:`OTHER_ACTIVATIONS`: ``gelu``, ``silu``, ``tanh``, ...; function, method and module forms, a module's
forward calling the function counted once), the record's ``other_activations`` (only the kinds that ran), so
that a GELU model with one ``F.relu`` in its stem is not named ``relu (detected)``
(:func:`kwta_robust.fresh_record.probed_model`).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.detect_selections import selections_outside

#: ReLU calls (function and method forms, in place too), read-only.
RELU_OPS: frozenset[Callable[..., Any]] = frozenset({F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_})
#: Clamps: a ReLU where the lower bound is 0 and there is no upper one. Value: the position of ``min`` and of
#: ``max`` among the positional arguments (``max`` ``None``: the operation has none).
CLAMP_OPS: Mapping[Callable[..., Any], tuple[int, int | None]] = MappingProxyType({
    **{fn: (1, 2) for fn in (torch.clamp, Tensor.clamp, Tensor.clamp_, torch.clip, Tensor.clip, Tensor.clip_)},
    **{fn: (1, None) for fn in (torch.clamp_min, Tensor.clamp_min, Tensor.clamp_min_)},
})

_KINDS: Mapping[str, tuple[str, ...]] = MappingProxyType({  # kind: the names of its functions in F, torch, Tensor
    "gelu": ("gelu",), "silu": ("silu", "silu_"), "tanh": ("tanh", "tanh_"), "sigmoid": ("sigmoid", "sigmoid_"),
    "elu": ("elu", "elu_"), "leaky_relu": ("leaky_relu", "leaky_relu_"), "hardswish": ("hardswish", "hardswish_"),
    "softplus": ("softplus",), "mish": ("mish", "mish_"), "relu6": ("relu6",), "hardtanh": ("hardtanh", "hardtanh_"),
    "selu": ("selu", "selu_"), "celu": ("celu", "celu_"), "prelu": ("prelu",), "rrelu": ("rrelu", "rrelu_"),
    "hardsigmoid": ("hardsigmoid", "hardsigmoid_"), "softsign": ("softsign",), "logsigmoid": ("logsigmoid",),
    "tanhshrink": ("tanhshrink",),
})
#: The other activations counted (function, method and in-place forms; an ``nn`` module's forward calls one of
#: them), each mapped to its kind, read-only.
OTHER_ACTIVATIONS: Mapping[Callable[..., Any], str] = MappingProxyType({
    fn: kind for kind, names in _KINDS.items() for name in names
    for fn in (getattr(space, name, None) for space in (F, torch, Tensor)) if callable(fn)})


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


class ReluCount:
    """The ReLU calls on a batch of ``batch`` samples (:func:`is_relu_call`) made while no module named in
    ``accounted`` runs: called with each call of the watched forward and the stack of module names whose
    ``forward`` is running (the selections' watch, :func:`~kwta_robust.detect_selections.selections_outside`'s
    ``relus``); ``calls`` the count, ``others`` the other activations' calls by kind (:data:`OTHER_ACTIVATIONS`)."""

    def __init__(self, batch: int, accounted: Collection[str] = ()) -> None:
        self.batch, self.accounted, self.calls = batch, {name for name in accounted if name}, 0
        self.others: dict[str, int] = {}

    def __call__(self, func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any] | None,
                 stack: tuple[str, ...]) -> None:
        first = args[0] if args else None
        if isinstance(first, Tensor) and first.is_floating_point() and first.ndim > 0 \
                and first.shape[0] == self.batch and not self.accounted.intersection(stack):
            if is_relu_call(func, args, kwargs):
                self.calls += 1
            elif func in OTHER_ACTIVATIONS:
                kind = OTHER_ACTIVATIONS[func]
                self.others[kind] = self.others.get(kind, 0) + 1

    def other_activations(self) -> dict[str, int]:
        """The other activations that ran, by kind (sorted by name; none ran: ``{}``)."""
        return dict(sorted(self.others.items()))


def relu_calls(model: nn.Module, x: Tensor, accounted: Collection[str] = (), seed: int = 0) -> int:
    """The ReLUs one forward of ``model`` on ``x`` ``[B, ...]`` applies outside the modules named in ``accounted``
    (see the module docstring), counted in the selections' forward (:func:`selections_outside`, ``accounted`` the
    modules it leaves out too); every hook is removed after and the model is left as it was."""
    return activation_calls(model, x, accounted, seed)[0]


def activation_calls(model: nn.Module, x: Tensor, accounted: Collection[str] = (),
                     seed: int = 0) -> tuple[int, dict[str, int]]:
    """:func:`relu_calls` and the other activations that forward applied, by kind
    (:meth:`ReluCount.other_activations`), counted in that one forward."""
    count = ReluCount(int(x.shape[0]), accounted)
    selections_outside(model, x, accounted, seed, relus=count)
    return count.calls, count.other_activations()
