"""Top-k selections the layer probe cannot see: calls of torch's selection operations outside every probed gate.

The layer probe (:mod:`kwta_robust.detect`) classifies leaf modules called with one tensor. A kWTA written as a
function call inside a parent's ``forward`` (``h = kwta(conv(x))``), inside a module that has children, or in a
module called with keyword arguments is invisible to it — and then BPDA replaces nothing and a plain gradient
attack meets kWTA's discontinuous gradients (gradient masking; Athalye, Carlini & Wagner, ICML 2018, §3; Tramèr et
al., NeurIPS 2020, §5.5) with no flag to say so. :func:`selections_outside` runs the model once more under a
:class:`~torch.overrides.TorchFunctionMode` that notes every call of a selection operation (``topk``,
``kthvalue``, ``sort``, ``argsort``, ``msort``, ``quantile``, ``nanquantile``) — and of a step function
(``round``, ``floor``, ``ceil``, ``trunc``, ``sign``, ``heaviside``: input quantization written inline) on the
batch — with the stack of modules whose ``forward`` is running; calls made inside a module the probe found to be
a gate or piecewise constant, or that implements the surrogate protocol, are accounted for and left out. The
diagnostics flag the selections that remain (``selections-outside-layers``) unless a BPDA attack acted on a module
around them, and name where the step functions are called when the input gradient vanishes (``zero-gradients``).
"""

from __future__ import annotations

from collections import Counter
from types import MappingProxyType
from typing import Any, Callable, Collection, Mapping

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from attacks.base import eval_mode, rng_scope

#: Selection operations (function and method forms) by the name the record uses (read-only).
SELECTION_OPS: Mapping[Callable[..., Any], str] = MappingProxyType({
    fn: name
    for name in ("topk", "kthvalue", "sort", "argsort", "msort", "quantile", "nanquantile")
    for fn in (getattr(torch, name), getattr(Tensor, name))
})
#: Step functions (zero gradient almost everywhere: input quantization, binarization; Athalye et al. 2018 §4.1,
#: shattered gradients), noted when called on a floating-point batch; recorded with ``"kind": "step"``.
STEP_OPS: Mapping[Callable[..., Any], str] = MappingProxyType({
    fn: name
    for name in ("round", "floor", "ceil", "trunc", "sign", "heaviside")
    for fn in (getattr(torch, name), getattr(Tensor, name))
})


class _SelectionWatch(TorchFunctionMode):
    """Counts selection calls by (operation, module stack) while ``stack`` holds no module of ``accounted``."""

    def __init__(self, stack: list[str], accounted: Collection[str], batch: int) -> None:
        super().__init__()
        self.stack, self.accounted, self.batch = stack, set(accounted), batch
        self.calls: Counter[tuple[str, str, tuple[str, ...]]] = Counter()

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None):
        if not self.accounted.intersection(self.stack):
            if func in SELECTION_OPS:
                self.calls[("selection", SELECTION_OPS[func], tuple(self.stack))] += 1
            elif func in STEP_OPS and args and isinstance(args[0], Tensor) and args[0].is_floating_point() \
                    and args[0].ndim > 0 and args[0].shape[0] == self.batch:  # on the batch, not on a size or index
                self.calls[("step", STEP_OPS[func], tuple(self.stack))] += 1
        return func(*args, **(kwargs or {}))


def selections_outside(model: nn.Module, x: Tensor, accounted: Collection[str], seed: int = 0,
                       probed: Mapping[str, bool] = MappingProxyType({})) -> list[dict]:
    """Selection and step-function calls of one forward of ``model`` on ``x`` ``[B, ...]`` (eval mode, no
    gradients, seeded RNG restored after) made outside the modules named in ``accounted``: ``{"op", "kind",
    "modules", "calls", "probed"}`` each (``kind``: ``"selection"`` or ``"step"``), with ``modules`` the stack of
    modules whose ``forward`` made the call, outermost first (``""`` is the model itself), and ``probed`` whether
    the innermost of them is in ``probed`` (the modules the layer probe classified from their calls and found no
    gate in, each mapped to whether its outputs were shaped like its inputs: ``keeps_shape`` in the entry).
    Every hook is removed after; the model is left as it was."""
    named = list(model.named_modules())
    stack: list[str] = []
    handles = []

    def enter(name: str) -> Callable[..., None]:
        return lambda _module, _args: stack.append(name)

    def leave(_module: nn.Module, _args: tuple, _output: Any) -> None:
        stack.pop()

    try:
        for name, module in named:
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave))
        with eval_mode(model), rng_scope(seed), torch.no_grad(), _SelectionWatch(stack, accounted, len(x)) as watch:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    found = []
    for (kind, op, modules), n in sorted(watch.calls.items()):
        entry: dict[str, Any] = {"op": op, "kind": kind, "modules": list(modules), "calls": n,
                                 "probed": bool(modules) and modules[-1] in probed}
        if entry["probed"]:
            entry["keeps_shape"] = bool(probed[modules[-1]])
        found.append(entry)
    return found


def step_calls(selections: list[dict]) -> list[dict]:
    """The step-function calls among a record's ``detection.selections`` (records before them have none)."""
    return [s for s in selections if s.get("kind") == "step"]


def where_called(selection: dict) -> str:
    """``"torch.topk in the forward of features.block1"`` (or ``"of the model itself"``) for one selection."""
    inner = selection["modules"][-1] if selection.get("modules") else ""
    return f"{selection['op']} in the forward of {inner or 'the model itself'}"
