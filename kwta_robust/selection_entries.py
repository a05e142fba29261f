"""Readers of the selection entries a record keeps (``record.detection["selections"]``, written by
:func:`kwta_robust.detect_selections.selections_outside`): which entry is a max-pool's (:func:`is_max_pool_op`) and
which one the pool of a max-pool winner-take-all BPDA cannot relax (:func:`is_pool_selection`), the step-function
calls (:func:`step_calls`), where a call was made, for the notes (:func:`where_called`), and whether a module BPDA
acted on holds it (:func:`held_by`); and what an entry holds of the gate it built (:func:`gate_entry`, the
writer's) and the gates one call built (:func:`gate_counts`). They read the entries alone, not the model, so the
diagnostics, notes and BPDA checks share one reading of records old and new."""

from __future__ import annotations

from typing import Any, Collection, Iterable, Mapping

from attacks.gates import GateFit
from attacks.one_winner import GLOBAL_POOL_SUFFIX
from attacks.pool_relax import POOL_GATE_MARK


def is_max_pool_op(selection: Mapping[str, Any]) -> bool:
    """Whether a selection entry is a max-pool's or an adaptive max-pool's of windows (relaxed or not; a global one,
    ``adaptive_max_pool2d(1)``, picks one winner per channel: :mod:`attacks.one_winner`)."""
    op = str(selection.get("op", ""))
    return op.startswith(("max_pool", "adaptive_max_pool")) and not op.endswith(GLOBAL_POOL_SUFFIX)


def is_pool_selection(selection: Mapping[str, Any]) -> bool:
    """Whether a selection entry is the pool of a max-pool winner-take-all BPDA cannot relax
    (:mod:`attacks.pool_gates`): a max-pool or an adaptive max-pool of windows (``adaptive_max_pool2d``) noted with
    no gate — its gate returned as a 0/1 mask for the parent to apply, or made in place
    (:func:`kwta_robust.detect.unnoted_pool_gates`). One that built a readable gate has ``gate``
    :data:`~attacks.pool_relax.POOL_GATE_MARK` (:mod:`attacks.pool_relax` relaxes it); a global one
    (``adaptive_max_pool2d(1)``; in records before that name, ``adaptive_max_pool2d`` with a gate) that built its
    gate of one winner per channel is relaxed (``gate: channel``: :mod:`attacks.one_winner`)."""
    return is_max_pool_op(selection) and not selection.get("gate")


def step_calls(selections: list[dict]) -> list[dict]:
    """The step-function calls among a record's ``detection.selections`` (records before them have none)."""
    return [s for s in selections if s.get("kind") == "step"]


def where_called(selection: dict) -> str:
    """``"torch.topk in the forward of features.block1"`` (or ``"of the model itself"``) for one selection; for a
    tensor of constant sparsity (``kind: sparsity``), what it holds and where it was passed."""
    inner = selection["modules"][-1] if selection.get("modules") else ""
    what = selection["op"]
    if selection.get("kind") == "sparsity":
        what = (f"a top-k without torch's selection operations ({selection.get('k')} of {selection.get('size')} "
                f"values non-zero in every sample: the {selection.get('tensor')})")
    return f"{what} in the forward of {inner or 'the model itself'}"


def held_by(acted: Iterable[str], selection: dict, inline: Iterable[str] = ()) -> bool:
    """Whether a module of ``acted`` (BPDA acted on it) holds ``selection``: a module around the call, but the model
    itself (``""``, around every call) and a module of ``inline`` (BPDA acted on it as on a gate built inline in its
    own ``forward``: ``wrapped inline`` in a record's ``bpda_layers``) only where the call was made in that module's
    own ``forward`` (for the model itself, one that built a gate) — BPDA there relaxes the gates of that ``forward``
    alone (:mod:`attacks.inline_gates`), not the selections of its children (an input-normalization wrapper's
    ``model`` acted on for the gate in its ``forward`` does not hold a top-k its child ``model.block`` makes); a
    selection that routes (``routes``: :mod:`kwta_robust.routed_selections`), which no inline relaxation replaces,
    only where a module around it was replaced whole."""
    names, modules, own = set(acted), list(selection.get("modules") or ()), set(inline)
    inner = modules[-1] if modules else None
    mine = not selection.get("routes")
    return any(m and m in names and ((m == inner and mine) or m not in own) for m in modules) or (
        "" in names and inner == "" and bool(selection.get("gate")))


def gate_entry(fit: GateFit | str, seen: Collection[tuple[int, int]] = ()) -> dict[str, Any]:
    """What a selection entry holds of the inline gate ``fit`` it built first: its grouping (``gate``) and the k/N
    the matrices and notes read as a module gate's (``k`` of ``group_size`` per group; records before had the
    grouping alone) and, where its gates showed two ``(k, group_size)`` or more (``seen``), each in the order first
    read (``k_seen``; records before kept the first alone: a k/N the other gates did not have); a max-pool
    winner-take-all gate (:data:`POOL_GATE_MARK`, no k/N) its mark alone."""
    if isinstance(fit, str):
        return {"gate": fit}
    return {"gate": fit.grouping, "k": int(fit.k), "group_size": int(fit.group_size)} | (
        {"k_seen": [[int(k), int(n)] for k, n in seen]} if len(seen) > 1 else {})


def gate_counts(key: tuple[str, str, tuple[str, ...]], gates: Mapping[tuple, Any], per_call: Mapping[tuple, int],
                per_call_by: Mapping[tuple, int]) -> dict[str, int]:
    """The counts a selection entry ``key`` (``(kind, op, modules)``) holds of the gates of its ``forward``: where a
    call of that forward built two gates or more (readable or in place; ``per_call``: per module stack, the fewest
    one call built), that count (``gates``, which BPDA holds a call to); where the forward's gates came from
    several selections (a ``topk`` made two, a ``max`` one), also this selection's own fewest per call
    (``own_gates``, from ``per_call_by``: the notes name each entry's, not the forward's 3 on each). None for a
    selection that built no gate; no ``own_gates`` for a max-pool gate's (the notes do not list it)."""
    forward = per_call.get(key[2], 0)
    if key not in gates or forward < 2:
        return {}
    shared = sum(k[2] == key[2] for k in gates) > 1
    own = per_call_by.get(key, forward)
    return {"gates": forward} | ({"own_gates": own} if shared and own != forward and gates[key] != POOL_GATE_MARK
                                 else {})


def split_by_call(found: list[dict], by_call: Mapping[tuple, Mapping[int, GateFit]],
                  calls: Mapping[tuple, int]) -> list[dict]:
    """``found`` with each entry whose selection's calls in one call of its ``forward`` built gates of different
    groupings (``by_call``: per ``(kind, op, modules)``, the fit of its n-th call's gate; a volume then a local
    ``topk`` of one map, both first, then both gates), which one entry cannot name, as one entry per such call, each
    with its own fit (``gate``, ``k``, ``group_size``) and its count of calls (``calls``: per ``(key, n)``); the others
    as they are (gates of one grouping and other k/N keep one entry, each k/N in ``k_seen``)."""
    out = []
    for entry in found:
        key = (entry["kind"], entry["op"], tuple(entry["modules"]))
        fits = by_call.get(key, {})
        if len({fit.grouping for fit in fits.values()}) < 2:
            out.append(entry)
            continue
        rest = {name: value for name, value in entry.items()
                if name not in ("op", "kind", "modules", "calls", "gate", "k", "group_size", "k_seen")}
        out += [{"op": entry["op"], "kind": entry["kind"], "modules": entry["modules"], "calls": calls[(key, n)]}
                | gate_entry(fits[n]) | rest for n in sorted(fits)]
    return out
