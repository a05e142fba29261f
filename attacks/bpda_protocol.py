"""The BPDA protocol: modules whose backward pass can be replaced while the forward pass stays exact.

Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, ICML 2018, "Obfuscated Gradients Give a
False Sense of Security"): compute the forward pass exactly, but differentiate a surrogate ``g(x) ≈ f(x)``.

A layer takes part by implementing :class:`SupportsSurrogateBackward` — ``kwta_robust.layers.KWTA`` and
``KWTA2d`` do; any other module gets the protocol from :class:`attacks.bpda_wrap.ModuleBackward` (forward hooks).
:func:`surrogate_backward` switches every such layer of a model (or the protocol objects it is given) for the
duration of a block and restores each layer's previous setting afterwards, so any gradient attack (ours,
torchattacks', foolbox's) runs unchanged as a BPDA attack on the switched model.

Backward specs understood by conforming layers:

* ``"exact"``: autograd through the exact forward (for kWTA: gradient flows through the winners only);
* ``"identity"``: straight-through, ``dL/dx = dL/dy``;
* ``"smooth"``: a differentiable relaxation of the layer with a ``temperature`` (layer-defined);
* a callable ``g(x) -> y``: any differentiable surrogate of the layer's input→output map (e.g. a fitted module).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping, Protocol, Union, runtime_checkable

import torch
from torch import Tensor, nn

from attacks.errors import AttackConfigError

BackwardSpec = Union[str, Callable[[Tensor], Tensor]]
BACKWARD_NAMES: tuple[str, ...] = ("exact", "identity", "smooth")


@runtime_checkable
class SupportsSurrogateBackward(Protocol):
    """A module whose backward pass can be switched without changing its forward output."""

    backward: BackwardSpec
    temperature: float

    def set_backward(self, backward: BackwardSpec, temperature: float | None = None) -> None: ...


def surrogate_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All submodules (by qualified name) implementing :class:`SupportsSurrogateBackward`."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SupportsSurrogateBackward)}


SurrogateChoice = Union[BackwardSpec, Mapping[str, BackwardSpec]]


def checked_surrogate_output(out: object, x: Tensor, like: Tensor, layer: str) -> Tensor:
    """A callable surrogate's ``out = g(x)`` if it is a finite tensor of ``like``'s shape, dtype and device (the
    layer's output) that depends on ``x`` where gradients are recorded; else a one-line :class:`AttackConfigError`
    naming the layer (a NaN, detached, broadcast or missing output silently made BPDA's gradient NaN, zero, summed or
    the exact one)."""
    if not isinstance(out, Tensor):
        problem = f"returned {type(out).__name__}, not a tensor"
    elif (out.shape, out.dtype, out.device) != (like.shape, like.dtype, like.device):
        problem = f"returned {out.dtype} {tuple(out.shape)} on {out.device}"
    elif torch.is_grad_enabled() and x.requires_grad and not out.requires_grad:
        problem = "returned a tensor that does not depend on x (detached)"
    elif not bool(torch.isfinite(out).all()):
        problem = "returned NaN or infinite values"
    else:
        return out
    raise AttackConfigError(f"surrogate of BPDA layer {layer!r}: g(x) {problem}; it must return a finite tensor "
                            f"differentiable in x, shaped like the layer's output ({like.dtype} {tuple(like.shape)} "
                            f"on {like.device})")


@contextlib.contextmanager
def surrogate_backward(
    model: nn.Module,
    surrogate: SurrogateChoice,
    temperature: float | None = None,
    layers: Mapping[str, SupportsSurrogateBackward] | None = None,
) -> Iterator[dict[str, SupportsSurrogateBackward]]:
    """Switch the backward pass of every conforming layer inside the block; restore afterwards.

    ``surrogate`` is one spec for all layers, or a mapping from layer name (as in ``named_modules``) to spec
    (layers not named keep their current backward). ``layers``: the protocol objects to switch, by name (default:
    every submodule implementing the protocol; :func:`attacks.bpda_wrap.attached_backward` gives them for any
    module). Yields the switched layers by name, so a caller can change ``temperature`` during the block (e.g. to
    sharpen a smooth surrogate over the attack).
    """
    layers = surrogate_layers(model) if layers is None else dict(layers)
    if isinstance(surrogate, Mapping):
        unknown = sorted(set(surrogate) - set(layers))
        if unknown:
            raise ValueError(f"surrogate: no BPDA-capable layer named {unknown[0]!r}; known: {sorted(layers)}")
        chosen = {name: surrogate[name] for name in surrogate}
    else:
        chosen = {name: surrogate for name in layers}
    previous = {name: (layers[name].backward, layers[name].temperature) for name in chosen}
    try:
        for name, spec in chosen.items():
            layers[name].set_backward(spec, temperature)
        yield {name: layers[name] for name in chosen}
    finally:
        for name, (spec, temp) in previous.items():
            layers[name].set_backward(spec, temp)


def set_temperature(layers: Mapping[str, nn.Module], temperature: float) -> None:
    """Set the smooth-surrogate temperature of switched layers (used by sharpening schedules)."""
    for layer in layers.values():
        layer.set_backward(layer.backward, temperature)
