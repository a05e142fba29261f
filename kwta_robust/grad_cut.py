"""Where a model's forward cuts the autograd graph: the last operation that still received a tensor with a gradient.

A forward that computes under ``torch.no_grad()``, calls ``.detach()``, leaves torch (NumPy), compares its input
(``x > t``: thermometer encoding, binarization) or returns ``one_hot(argmax)`` gives logits with no input gradient at
all (Athalye, Carlini & Wagner, ICML 2018, §4.1: shattered gradients; Carlini et al. 2019, §5). Every gradient attack
then runs with a zero gradient, and the ``zero-gradients`` flag says so; written as a function call inside
``forward`` such a cut is no module the layer probe can classify or BPDA can replace, so the flag should say where
it is. :func:`locate_cut` runs the model once on ``x`` ``[B, ...]`` with ``requires_grad`` under a
:class:`~torch.overrides.TorchFunctionMode` and returns the last call, in call order, that had an input requiring a
gradient — after it no operation sees one, so the graph ends there — with the stack of modules whose ``forward``
made it and whether grad mode was off (``torch.no_grad()``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle
from torch.utils._pytree import tree_flatten

from attacks.base import eval_mode, frozen_parameters, rng_scope


class _LastGradientCall(TorchFunctionMode):
    """Remembers the last call whose operand requires a gradient (op name, module stack, grad mode); property
    reads (``x.dtype``) are no operations. The parameters are frozen while it watches, so only the input's
    descendants require a gradient."""

    def __init__(self, stack: list[str]) -> None:
        super().__init__()
        self.stack = stack
        self.last: dict[str, Any] | None = None

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None):
        # the operand: the first argument (a method's self; a list for cat/stack), not tensors passed for their
        # dtype or device (``t.to(x)``)
        leaves, _ = tree_flatten(args[0] if args else (kwargs or {}).get("input"))
        operand_has_grad = any(isinstance(t, Tensor) and t.requires_grad for t in leaves)
        if operand_has_grad and getattr(func, "__name__", "") != "__get__":
            name = getattr(func, "__name__", None) or str(func)
            self.last = {"op": name.strip("_") or name, "modules": list(self.stack),
                         "no_grad": not torch.is_grad_enabled()}
        return func(*args, **(kwargs or {}))


def module_stack_hooks(model: nn.Module) -> tuple[list[str], list[RemovableHandle]]:
    """Hooks on every module of ``model`` keeping, in the returned list, the names of the modules whose forward has
    begun and not returned, outermost first (``""`` the model itself): during a forward, where it is; after a
    forward that raised, the modules it raised in (a module that raises runs no forward hook). The caller removes
    the returned handles."""
    stack: list[str] = []
    handles = []

    def leave(_module: nn.Module, _args: tuple, _output: Any) -> None:  # returns None: the output is kept
        stack.pop()

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda _m, _a, name=name: stack.append(name) and None))
        handles.append(module.register_forward_hook(leave))
    return stack, handles


def locate_cut(model: nn.Module, x: Tensor, seed: int = 0) -> dict[str, Any] | None:
    """The last call of one forward of ``model`` on ``x`` ``[B, ...]`` (eval mode, seeded RNG restored after) that
    received a tensor requiring a gradient: ``{"op", "modules", "no_grad"}`` (``modules`` outermost first, ``""``
    the model itself), or ``None`` if no call did. Meaningful when the logits have no input gradient; every hook is
    removed after and the model is left as it was. A model that cannot run under the watch (a torch function mode)
    gives ``None``: where the cut is stays unnamed, the ``zero-gradients`` flag is raised all the same."""
    stack, handles = module_stack_hooks(model)
    try:
        with eval_mode(model), frozen_parameters(model), rng_scope(seed), torch.enable_grad(), \
                _LastGradientCall(stack) as watch:
            model(x.detach().clone().requires_grad_(True))
    except (RuntimeError, TypeError, ValueError):  # only the cut's name is lost (the probes ran this model already)
        return None
    finally:
        for handle in handles:
            handle.remove()
    return watch.last


def cut_text(cut: dict[str, Any]) -> str:
    """``"detach in the forward of the model itself"`` (``, under torch.no_grad()`` when grad mode was off)."""
    inner = cut["modules"][-1] if cut.get("modules") else ""
    return (f"{cut['op']} in the forward of {inner or 'the model itself'}"
            + (", under torch.no_grad()" if cut.get("no_grad") else ""))
