"""Whether a leaf module the layer probe reads as a top-k gate is a top-k then a ReLU (a TopK sparse autoencoder,
Gao et al. 2024: ``zeros.scatter(-1, idx, relu(vals))`` of ``vals, idx = h.topk(k)``), whose winners all had a
positive value on the probe batch: on that batch it is an ordinary top-k gate, but on an attack step a negative
winner comes out 0. BPDA then relaxes it as the top-k gate of ``relu(x)`` (score ``"relu"``,
:func:`attacks.gates.relaxed_gate`), through the ReLU's exact gradient, rather than as a gate of ``x`` whose zeroed
negative winner would read as a loser the relaxation still passes a little gradient to. Read once per probed call,
never on an attack step (no host–device synchronisation there)."""

from __future__ import annotations

from typing import Callable

from torch import Tensor


def zeroes_negative_winners(call: Callable[[Tensor], Tensor], x: Tensor, out: Tensor) -> bool:
    """Whether the module (``call``: it on a copy, without gradients) whose output on ``x`` ``[N, ...]`` was ``out``,
    a top-k gate of ``x`` by value with no negative output, returns only zeros on ``x`` moved below 0 (the same
    order, every unit negative), where a top-k gate of ``x`` keeps its ``k`` negative winners: a top-k then a
    ReLU. ``False`` for an output with a negative element (its winners' signs pass), an empty input or an
    all-zero output, or a call whose output on the moved input holds another number of elements (``out`` may be in
    ``x``'s shape: the layer probe passes a flattened ``[N, C·H·W]`` output as :func:`kwta_robust.detect.gate_view`
    reads it, ``[N, C, H, W]``)."""
    if x.numel() == 0 or not bool((out != 0).any()) or bool((out < 0).any()):
        return False
    below = x - (x.max() - x.min()) - x.abs().max() - 1  # every element < 0, the differences kept
    again = call(below)
    return again.numel() == out.numel() and not bool((again != 0).any())
