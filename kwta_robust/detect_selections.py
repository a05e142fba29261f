"""Top-k selections the layer probe cannot see: calls of torch's selection operations outside every probed gate.

The layer probe (:mod:`kwta_robust.detect`) classifies leaf modules called with one tensor. A kWTA written as a
function call inside a parent's ``forward`` (``h = kwta(conv(x))``), inside a module that has children, or in a
module called with keyword arguments is invisible to it — and then BPDA replaces nothing and a plain gradient
attack meets kWTA's discontinuous gradients (gradient masking; Athalye, Carlini & Wagner, ICML 2018, §3; Tramèr et
al., NeurIPS 2020, §5.5) with no flag to say so. :func:`selections_outside` runs the model once more under a
:class:`~torch.overrides.TorchFunctionMode` that notes every call of a selection operation (``topk``,
``kthvalue``, ``sort``, ``argsort``, ``msort``, ``quantile``, ``nanquantile``) with the stack of modules whose
``forward`` is running; calls made inside a module the probe found to be a gate or that implements the surrogate
protocol are accounted for and left out. The diagnostics (``selections-outside-layers``) flag what remains unless
a BPDA attack acted on a module around it.
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


class _SelectionWatch(TorchFunctionMode):
    """Counts selection calls by (operation, module stack) while ``stack`` holds no module of ``accounted``."""

    def __init__(self, stack: list[str], accounted: Collection[str]) -> None:
        super().__init__()
        self.stack, self.accounted = stack, set(accounted)
        self.calls: Counter[tuple[str, tuple[str, ...]]] = Counter()

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None):
        op = SELECTION_OPS.get(func)
        if op is not None and not self.accounted.intersection(self.stack):
            self.calls[(op, tuple(self.stack))] += 1
        return func(*args, **(kwargs or {}))


def selections_outside(model: nn.Module, x: Tensor, accounted: Collection[str], seed: int = 0) -> list[dict]:
    """Selection calls of one forward of ``model`` on ``x`` ``[B, ...]`` (eval mode, no gradients, seeded RNG
    restored after) made outside the modules named in ``accounted``: ``{"op", "modules", "calls"}`` each, with
    ``modules`` the stack of modules whose ``forward`` made the call, outermost first (``""`` is the model
    itself). Every hook is removed after; the model is left as it was."""
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
        with eval_mode(model), rng_scope(seed), torch.no_grad(), _SelectionWatch(stack, accounted) as watch:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [{"op": op, "modules": list(modules), "calls": n} for (op, modules), n in sorted(watch.calls.items())]


def where_called(selection: dict) -> str:
    """``"torch.topk in the forward of features.block1"`` (or ``"of the model itself"``) for one selection."""
    inner = selection["modules"][-1] if selection.get("modules") else ""
    return f"{selection['op']} in the forward of {inner or 'the model itself'}"
