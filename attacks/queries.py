"""Counting what an attack costs: forward and backward passes through the attacked model, per input row.

The cost of an attack on a model is the number of model evaluations it makes -- *queries*, in the black-box sense
(Andriushchenko et al., ECCV 2020; Tramèr et al., NeurIPS 2020) -- plus, for white-box attacks, the backward
passes through the model. :func:`count_queries` measures both without touching the model's state or its
``state_dict``: a forward hook on the model's root module counts the rows of every batch the model sees, and, when
that batch's logits take part in an autograd graph, a tensor hook on the logits counts the rows of every gradient
that flows back through them. A forward of ``[B, ...]`` inputs counts ``B`` forwards; one
``torch.autograd.grad(loss, x)`` through it counts ``B`` backwards (a Jacobian with one backward per class counts
one per class). The hooks are removed when the ``with`` block ends (but see deep copies below).

Counting is per call of the model itself, whoever calls it: an attack's own checks, its inner attacks, probes of
gradient estimation, wrappers that show the model to third-party code (torchattacks, foolbox) -- everything that
evaluates this model. A different model (a transfer source, a distilled twin) is not this model, except that a
deep copy of a module copies its hooks, so a twin deep-copied while counting is counted too -- and keeps its
copy of the hook after the block, counting its later forwards into the same :class:`QueryCount`.

Example::

    with count_queries(model) as count:
        x_adv = attack(model, x, y, threat)
    count.forwards, count.backwards, count.total
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

from torch import Tensor, nn


@dataclass
class QueryCount:
    """Forward and backward passes (per input row) counted by :func:`count_queries`."""

    forwards: int = 0
    backwards: int = 0

    @property
    def total(self) -> int:
        """Forward plus backward passes: the cost measure of the strength benchmark and the budget check."""
        return self.forwards + self.backwards


def _rows(value: Any) -> int:
    return int(value.shape[0]) if isinstance(value, Tensor) and value.ndim > 0 else 1


@contextlib.contextmanager
def count_queries(model: nn.Module) -> Iterator[QueryCount]:
    """Count forward and backward passes through ``model`` inside the block (see the module docstring)."""
    count = QueryCount()

    def on_backward(grad: Tensor) -> None:
        count.backwards += _rows(grad)

    def on_forward(module: nn.Module, args: tuple, output: Any) -> None:
        count.forwards += _rows(args[0]) if args else _rows(output)
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(on_backward)

    handle = model.register_forward_hook(on_forward)
    try:
        yield count
    finally:
        handle.remove()
