"""Readers of the selection entries a record keeps (``record.detection["selections"]``, written by
:func:`kwta_robust.detect_selections.selections_outside`): which entry is a max-pool's (:func:`is_max_pool_op`) and
which one the pool of a max-pool winner-take-all BPDA cannot relax (:func:`is_pool_selection`), the step-function
calls (:func:`step_calls`), where a call was made, for the notes (:func:`where_called`), and whether a module BPDA
acted on holds it (:func:`held_by`). They read the entries alone, not the model, so the diagnostics, notes and BPDA
checks share one reading of records old and new."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from attacks.one_winner import GLOBAL_POOL_SUFFIX


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
