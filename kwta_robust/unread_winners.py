"""One-winner operations the layer probe saw but could not read as a gate on its batch (``detection.unread_winners``).

An ``argmax``, a ``max``/``amax`` along a dimension or a global adaptive max-pool on the batch counts as a selection
only where a gate of one winner per group follows it in the same ``forward`` (:mod:`attacks.one_winner`,
:mod:`kwta_robust.detect_selections`). A local winner-take-all (LWTA: each block's largest unit kept, ``h · (v ==
v.amax(2, keepdim=True)).view_as(h)``; Srivastava et al., NeurIPS 2013) after a ReLU that never fires on the probe's
clean batch sees only zeros: every unit of a block ties with the largest, the mask keeps all of them and no gate
shows. The probe then noted nothing, BPDA (``bpda_layers: auto``) acted on no layer and ``bpda-no-layer`` said only
"if the model has a gate the probe missed, name it" — without the module. The calls left over are kept here, per
module, so that flag names the modules and what to do (:func:`kwta_robust.selection_text.unread_text`). Most
such calls are no gate at all (a softmax's ``x - x.amax(1)``, a global max-pool of features): they are named only
there, as a possibility.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def unread_winners(one_winner: Mapping[tuple[str, ...], Sequence[tuple[str, str, tuple[str, ...]]]],
                   gates: Mapping[tuple[str, str, tuple[str, ...]], Any]) -> list[dict]:
    """``{"op", "modules", "calls"}`` per one-winner operation and ``forward`` (``modules``: the stack of modules
    whose ``forward`` made the call, outermost first, ``""`` the model itself) that the selections' watch left
    pending at the end of the probe's forward (``one_winner``: its keys ``(kind, op, modules)`` per forward), where
    that ``forward`` built no gate on any call (``gates``: the watch's read gates, by key)."""
    built = {key[2] for key in gates}
    counts: dict[tuple[str, tuple[str, ...]], int] = {}
    for stack, keys in one_winner.items():
        for _, op, modules in keys:
            if stack not in built:
                counts[(op, modules)] = counts.get((op, modules), 0) + 1
    return [{"op": op, "modules": list(modules), "calls": n} for (op, modules), n in sorted(counts.items())]
