"""Operations that pick one winner per group, after which a gate of one winner per group is looked for.

A gate keeping one winner per group is written without torch's top-k operations in two common ways:

* a one-hot of an ``argmax`` (or ``argmin``) times the input: ``F.one_hot(h.argmax(1), C).permute(0, 3, 1, 2) · h``;
* local winner-take-all (LWTA; Srivastava et al., NeurIPS 2013; Panousis et al., NeurIPS 2021, "Local competition
  and stochasticity for adversarial robustness"): the input ``h`` ``[B, C, H, W]`` viewed as blocks of ``g``
  channels, ``v = h.view(B, C // g, g, H, W)``, and each block's largest unit kept, ``h · (v == v.amax(2,
  keepdim=True)).view_as(h)`` — or the same with ``torch.max(v, 2)`` (values and indices), ``v.max(2)``, or a mask
  scattered at the indices. Its gate reads as ``"block-<g>"`` with ``k = 1`` (:mod:`attacks.gates`).

``max`` and ``amax`` count only as reductions along a dimension named in the call (``torch.max(v, 2)``,
``v.amax(dim=2)``): ``torch.max(a, b)`` is an element-wise maximum and ``h.max()`` the largest element of the batch,
neither a choice of winners. The layer probe (:mod:`kwta_robust.detect_selections`) notes such a call as a selection
only where a gate of one winner per group follows it in the same ``forward``, and BPDA (:mod:`attacks.inline_gates`)
relaxes only such a gate after it. This module never imports ``kwta_robust``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

#: Operations that may pick one winner per group (function and method forms), by the name a record uses (read-only).
ONE_WINNER_OPS: Mapping[Callable[..., Any], str] = MappingProxyType({
    fn: name for name in ("argmax", "argmin", "amax", "max") for fn in (getattr(torch, name), getattr(Tensor, name))})
#: Of those, the ones that pick winners only when reducing along a named dimension (:func:`one_winner_op`).
REDUCING_ALONG_A_DIM: frozenset[str] = frozenset({"amax", "max"})


def one_winner_op(func: Callable[..., Any], args: tuple, kwargs: dict | None) -> str | None:
    """The name (:data:`ONE_WINNER_OPS`) of a call of ``func`` on ``args``/``kwargs`` that may pick one winner per
    group, else ``None``: ``argmax``/``argmin`` always; ``max``/``amax`` only along a dimension given as an int or a
    non-empty tuple (not ``torch.max(a, b)``, not ``h.max()``). (Which tensor it ranks is the caller's to check.)"""
    name = ONE_WINNER_OPS.get(func)
    if name in REDUCING_ALONG_A_DIM:
        dim = args[1] if len(args) > 1 else (kwargs or {}).get("dim")
        if not isinstance(dim, (int, tuple, list)) or isinstance(dim, bool) or dim in ((), []):
            return None
    return name
