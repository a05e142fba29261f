"""The text of ``selections-outside-layers`` (:func:`kwta_robust.diagnostics.check_selections_outside`): why each
top-k selection no BPDA attack replaced was left to the gradient attacks, and what to do about it
(:mod:`kwta_robust.detect_selections`; the max-pool winner-take-all gates of :mod:`attacks.pool_gates`); and
``bpda-no-layer``'s advice where the layer probe found such gates."""

from __future__ import annotations

from typing import Any, Collection, Mapping, Sequence

from attacks.pool_relax import POOL_GATE_MARK
from kwta_robust.detect import POOL_GATE, pool_gate_fix
from kwta_robust.diagnostics_base import layer_names
from kwta_robust.layer_text import module_text
from kwta_robust.selection_entries import is_pool_selection, where_called


def unrelaxed_pool_gates(detection: Mapping[str, Any] | None, layers: list[dict]) -> list[dict]:
    """Of the layer probe's max-pool gates ``layers`` (``record.detection["layers"]`` entries), those built in a form
    BPDA cannot relax: no selection entry of ``detection`` marks the module as building a readable one (``gate:
    max-pool``, :mod:`attacks.pool_relax`; ``auto`` acts on those)."""
    relaxed = {(s.get("modules") or [""])[-1] for s in (detection or {}).get("selections") or ()
               if s.get("gate") == POOL_GATE_MARK}
    return [layer for layer in layers if layer.get("name") not in relaxed]


def outside_text(missed: list[dict], pool_gates: Collection[str] = ()) -> tuple[str, list[str]]:
    """For the selection entries ``missed`` (``record.detection["selections"]``: ``op``, ``modules``, ``probed``,
    ``keeps_shape``, ``gate``) made outside every module BPDA acted on: what the model does, after ``"the model "``
    (``calls topk in the forward of ..., outside every layer the layer probe classifies (why)``; a call in a module
    of ``pool_gates``, the layer probe's max-pool gates, ``calls max_pool2d in the forward of NAME (...), which the
    layer probe read as a max-pool winner-take-all gate BPDA cannot relax``), and the advice, one item per fix."""
    read = [s for s in missed if s.get("probed") and s["modules"][-1] in pool_gates and is_pool_selection(s)]
    rest = [s for s in missed if s not in read]
    why, advice = _reasons(rest)
    clauses = [f"calls {_calls(rest)}, outside every layer the layer probe classifies ({why})"] if rest else []
    if read:  # each call names its module (where_called): naming them again read "... of 1 (...) in 1"
        one = len({s["modules"][-1] for s in read}) == 1
        gates = "a max-pool winner-take-all gate" if one else "max-pool winner-take-all gates"
        clauses.append(f"calls {_calls(read)}, which the layer probe read as {gates} BPDA cannot relax")
    pools = [s for s in missed if is_pool_selection(s)]
    if pools:  # attacks/pool_gates.py: no relaxation of its own
        advice += pool_advice(pools)
    return " and ".join(clauses), advice


def pool_advice(pools: list[dict]) -> list[str]:
    """The fix for the max-pool winner-take-all selections ``pools`` (entries as in :func:`outside_text`): the
    modules whose forward calls them named for the ``model`` surrogate (``auto`` leaves them out, the smooth surrogate
    is refused there); one in the model's own forward moved into a module of its own first, since the ``model``
    surrogate does not act on the model itself (:func:`kwta_robust.bpda_layers.for_surrogate`)."""
    names = sorted({s["modules"][-1] for s in pools if (s.get("modules") or [""])[-1]})
    advice = [f"a winner-take-all built from a max-pool (in {', '.join(names)}) has no smooth relaxation here and "
              f"bpda_layers: auto leaves {'it' if len(names) == 1 else 'them'} out: {pool_gate_fix(names)}"
              ] if names else []
    if len(names) < len({(s.get("modules") or [""])[-1] for s in pools}):  # one in the model's own forward
        advice.append("a winner-take-all built from a max-pool in the forward of the model itself has no smooth "
                      "relaxation here and the model surrogate does not act on the model itself: move it into a "
                      "module of its own called with the tensor as its one argument, name that module for surrogate: "
                      "model (bpda_layers: [NAME]) and add gradient estimation and square")
    return advice


def _calls(selections: list[dict]) -> str:
    return "; ".join(f"{where_called(s)} ({s['calls']} call(s) a forward)" for s in selections)


def _reasons(missed: list[dict]) -> tuple[str, list[str]]:
    """The reasons the layer probe left the selections ``missed`` (``"; "``-joined), and the advice for them."""
    routed = [s for s in missed if s.get("routes")]
    missed = [s for s in missed if not s.get("routes")]
    pooled = sorted({s["modules"][-1] for s in missed if s.get("probed") and is_pool_selection(s)})
    relaxable = sorted({s["modules"][-1] for s in missed if s.get("probed") and s.get("gate") == POOL_GATE_MARK})
    seen = sorted({s["modules"][-1] for s in missed if s.get("probed") and s.get("keeps_shape", True)}
                  - set(pooled) - set(relaxable))
    resized = sorted({s["modules"][-1] for s in missed if s.get("probed") and not s.get("keeps_shape", True)})
    in_place = [s for s in missed if s.get("in_place") and not s.get("gate")]  # h.mul_(h >= t) in a forward
    unseen = [s for s in missed if not s.get("probed") and s not in in_place]
    reasons = ["a top-k written as a function call, inside a module with children, or in a module called with "
               "keyword arguments or returning more than one tensor"] if unseen else []
    reasons += [in_place_reason(in_place)] if in_place else []
    advice = [routing_text(routed)] if routed else []
    reasons += [routing_reason(routed)] if routed else []
    reasons += [f"{', '.join(pooled)}: a module the probe saw, a winner-take-all from a max-pool"] if pooled else []
    reasons += [f"{', '.join(relaxable)}: a module the probe saw, a winner-take-all from a max-pool that BPDA's "
                "smooth surrogate relaxes where it acts on it"] if relaxable else []
    if seen:
        reasons.append(f"{', '.join(seen)}: a module the probe saw, whose outputs did not show a top-k gate (the "
                       "input times a 0/1 mask with a constant number of winners)")
        advice.append(f"name {', '.join(seen)} in bpda_layers (bpda_layers: [auto, {seen[0]}], or --bpda-layer auto "
                      f"--bpda-layer {seen[0]}): BPDA relaxes it where its output is a top-k selection of its input, "
                      "else passes the gradient straight through (bpda-straight-through says where that is wrong)")
    if resized:
        reasons.append(f"{', '.join(resized)}: a module the probe saw, whose output is not shaped like its input (it "
                       "returns selected values, not a mask of its input)")
        advice.append(f"BPDA cannot replace {', '.join(resized)} without a backward map of your own: trust the "
                      "gradient-free attacks (gradient estimation, square), or write it as its input times a 0/1 mask")
    inline = [s for s in missed if s.get("gate") and (not s.get("probed") or s.get("gate") == POOL_GATE_MARK)]
    if inline:
        advice.append("add bpda with bpda_layers: auto (surrogate smooth, the default, or identity), which relaxes "
                      f"the gate where it is built ({where_called(inline[0])}), the model's own forward included")
    if any(not s.get("gate") and not is_pool_selection(s) for s in unseen):  # max-pools: pool_advice
        advice.append("move the selection into a module of its own called with the tensor as its one argument "
                      "(bpda_layers: auto then finds it), or name a module around it in bpda_layers")
    advice += [in_place_text(in_place)] if in_place else []
    return "; ".join(reasons), advice


def in_place_reason(entries: list[dict]) -> str:
    """Why the selections ``entries`` (``in_place``: their gate was made in place in a ``forward`` that is no leaf
    module, ``h[(h < t).nonzero(as_tuple=True)] = 0`` on the tensor ``topk`` ranked:
    :func:`kwta_robust.detect_selections.selections_outside`) are no gate BPDA relaxes: its inline relaxation
    (:mod:`attacks.inline_gates`) reads a gate against the tensor it gates, whose values such a call overwrites
    (``h[h < t] = 0``, ``h[rows, idx] = 0``, ``h.scatter_(1, idx, 0)``, ``h.mul_(h >= t)``, ``h *= h >= t`` and
    ``h.masked_fill_(h < t, 0)`` it reads against a copy made before the call: :mod:`attacks.mask_assign`)."""
    return (f"{_routed_names(entries)}: a kWTA made in place (h[(h < t).nonzero(as_tuple=True)] = 0 on the tensor "
            "it ranked, or another in-place form than h[h < t] = 0, h[rows, idx] = 0, h.scatter_(1, idx, 0), "
            "h.mul_(h >= t) or h.masked_fill_(h < t, 0)) in a forward that is no leaf module, which BPDA cannot relax "
            "there (no tensor of that call holds the values it gated)")


def in_place_text(entries: list[dict]) -> str:
    """The fix for the in-place kWTA selections ``entries`` (:func:`in_place_reason`): a leaf module of its own,
    where the layer probe reads it as the out-of-place kWTA and BPDA relaxes it alike, or a form BPDA reads inline."""
    names = _routed_names(entries)
    return (f"move the kWTA made in place in {names} into a module of its own called with the tensor as its one "
            "argument (in place there is fine: bpda_layers: auto then finds the gate and BPDA relaxes it as the "
            "out-of-place kWTA), or write it there out of place (h * (h >= t), or h.masked_fill_(h < t, 0) on a copy) "
            "or as h[h < t] = 0, h[rows, idx] = 0 (rows = torch.arange(B)[:, None], idx the losers' indices) or "
            "h.mul_(h >= t), which bpda_layers: auto relaxes where it is built")


def _routed_names(routed: list[dict]) -> str:
    """The modules whose ``forward`` made the routing selections ``routed``, each once, in order (``", "``-joined)."""
    return ", ".join(dict.fromkeys(module_text((s.get("modules") or [""])[-1]) for s in routed))


def routing_reason(routed: list[dict]) -> str:
    """Why the routing selections ``routed`` (entries with ``routes``: :mod:`kwta_robust.routed_selections`) are
    no gate BPDA relaxes."""
    names = _routed_names(routed)
    return (f"{names}: a top-k that routes rather than gates units (its losers set to -inf before a softmax, as in "
            "top-k attention (Zhao et al. 2019) or mixture-of-experts top-k gating (Shazeer et al. 2017), or its "
            "indices picking experts' outputs or weights): out of scope for BPDA here, no surrogate relaxes it")


def routing_text(routed: list[dict]) -> str:
    """The fix for the routing selections ``routed``: no BPDA surrogate here relaxes them (naming the module would
    pass the gradient straight through a softmax or an expert choice), so trust the gradient-free attacks."""
    names = _routed_names(routed)
    return (f"do not name {names} in bpda_layers (BPDA would pass the gradient straight through the softmax or the "
            "expert choice): trust the gradient-free attacks (gradient estimation, square) for this model, whose "
            "gradient attacks' numbers are upper bounds")


def pool_gates_text(layers: list[dict]) -> str:
    """``bpda-no-layer``'s advice where the layer probe found the max-pool winner-take-all gates ``layers``
    (``record.detection["layers"]`` entries): ``bpda_layers: auto`` leaves them out and naming them for the smooth
    surrogate is refused (:func:`kwta_robust.bpda_layers.plan_bpda_layers`), so naming a gate the probe missed, the
    advice elsewhere, is wrong here; the ``model`` surrogate acts on them where they are named."""
    one = len(layers) == 1
    return (f"the layer probe read {layer_names(layers)} as {'a ' if one else ''}winner-take-all "
            f"gate{'' if one else 's'} built from a max-pool ({POOL_GATE}), which bpda_layers: auto leaves out and "
            f"the smooth surrogate cannot relax (naming {'it' if one else 'them'} for smooth is refused): "
            f"{pool_gate_fix([l['name'] for l in layers])}")


def unread_text(entries: Sequence[Mapping[str, Any]]) -> str:
    """``bpda-no-layer``'s advice where the layer probe saw one-winner operations it read no gate after
    (``detection.unread_winners``: :mod:`kwta_robust.unread_winners`): the modules, why a winner-take-all may show
    no gate there (inputs that all tie, as after a ReLU that never fires on the clean batch) and what to do; empty
    without such entries."""
    names = list(dict.fromkeys(str((e.get("modules") or [""])[-1]) for e in entries))
    if not names:
        return ""
    ops = ", ".join(dict.fromkeys(str(e.get("op")) for e in entries))
    shown = ", ".join(module_text(n) for n in names[:4]) + (", ..." if len(names) > 4 else "")
    named = [n for n in names[:4] if n]  # the model's own forward cannot be named for BPDA
    it = "it" if len(names) == 1 else "them"
    name = (f"name {it} (bpda_layers: [{', '.join(named)}] or --bpda-layer {named[0]}) so BPDA acts on {it}, and "
            if named else "")
    one = it == "it"
    return (f"the layer probe saw {ops} (one winner per group) in the forward of {shown} but read no gate after it on "
            f"its clean batch: if {'it is a' if one else 'they are'} winner-take-all{'' if one else 's'} (an LWTA "
            f"keeps each block's largest unit), {'its' if one else 'their'} inputs there all tie (after a ReLU that "
            f"never fires, every unit of a block is 0, so all are kept and no gate shows); {name}check why "
            f"{'it never fires' if one else 'they never fire'} on these inputs (dead units, or inputs scaled otherwise "
            "than in training)")
