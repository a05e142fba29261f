"""The layer probe's findings as text for a table's notes: the gates found in a model of your own, each probed
layer (top-k gate with its grouping and k, max-pool winner-take-all gate, piecewise-constant, randomized,
BPDA-capable), each top-k gate built inline in a module's ``forward`` and the layers each BPDA attack acted on
(:mod:`kwta_robust.detect`, :mod:`kwta_robust.bpda_layers`)."""

from __future__ import annotations

import math
from typing import Any, Collection, Mapping, Sequence

from attacks.pool_relax import POOL_GATE_MARK
from kwta_robust.detect import POOL_GATE
from kwta_robust.diagnostics_base import detected_layers
from kwta_robust.errors import is_finite_number
from kwta_robust.layers import k_from_ratio
from kwta_robust.results import EvalRecord

#: How the tables and notes name the model itself (the root module, ``""``): :func:`module_text`.
ROOT_TEXT = "(model)"
#: How many units a gate's measured k may be from the k a declared ratio gives (:func:`declared_ratio`,
#: :func:`kwta_robust.matrix_checks.grid_ratio_conflict`).
K_TOLERANCE = 1


def detected_gates_text(record: EvalRecord) -> str:
    """The gates the layer probe found in a model without our kWTA layers, as ``top-k 0.25 dense (3 found by the
    probe)`` (k/N and grouping where all agree), then the gates built inline in a module's ``forward`` (selections
    with ``gate``, :func:`inline_gate_count`: ``top-k 0.25 block-2 inline (1 found by the probe)``, k/N where
    their entries record ``k`` — records before did not — and agree, grouping where all agree), then its max-pool
    winner-take-all gates (kind ``max-pool-gate``, no k/N: ``max-pool WTA (1 found by the probe)``); empty when there
    are none."""
    if int(record.model.get("num_kwta_layers") or 0) > 0:
        return ""
    declared = declared_ratio(record)
    gates, pools = detected_layers(record, "gate"), detected_layers(record, POOL_GATE)
    pooled = {str(p.get("name")) for p in pools} | relaxed_pool_modules(record)  # leaf gates, and those inline
    texts = [f"max-pool WTA ({len(pooled)} found by the probe)"] if pooled else []
    inline = inline_selections(record)
    if inline:
        texts.insert(0, " ".join([*_ratio_grouping(inline_gate_layers(record), declared), "inline"])
                     + f" ({inline_gate_count(inline)} found by the probe)")
    if not gates:
        return " + ".join(texts)
    return " + ".join([" ".join(_ratio_grouping(gates, declared)) + f" ({len(gates)} found by the probe)", *texts])


def _ratio_grouping(gates: list[dict], declared: float | None = None) -> list[str]:
    """``["top-k", k/N, grouping]`` of gate entries (``evidence`` with ``k``, ``group_size``): the k/N the gates
    that have one agree on (:func:`common_ratio`), or the ``declared`` one that every gate of the record agrees with
    (:func:`declared_ratio`), the grouping where all agree."""
    # these gates alone (the module gates, or the inline ones: each has its text), not the record's gate_pairs
    ratio = common_ratio(entry_pairs(gates))
    ratio = declared if ratio is not None and declared is not None else ratio
    groupings = {str(g.get("grouping")) for g in gates if g.get("grouping")}
    return ["top-k", *([f"{ratio:.3g}"] if ratio is not None else ()), *(groupings if len(groupings) == 1 else ())]


def probe_ratio(record: EvalRecord) -> float | None:
    """The one k/N every top-k gate the layer probe found shows, module and inline gates (:func:`common_ratio`), or
    ``None`` (none, several, or an inline gate whose record holds no k)."""
    inline = inline_gate_layers(record)
    if any(not g["evidence"] for g in inline):
        return None
    return common_ratio(entry_pairs(detected_layers(record, "gate") + inline))  # gate_pairs, inline read once


def expected_k(ratio: float, size: int, model: Mapping) -> int:
    """The k a kwta_robust layer of k/N ``ratio`` keeps of ``size`` units in eval mode: :func:`k_from_ratio`, scaled
    by the record's common ``k_inference_factor`` as the layer scales it (rounded, at least 1, at most ``size``)."""
    k = k_from_ratio(ratio, size)
    factor = model.get("k_inference_factor")
    if is_finite_number(factor) and factor != 1:
        k = min(size, max(1, int(round(k * factor))))
    return k


def declared_ratio(record: EvalRecord) -> float | None:
    """The k/N the record declares (``model.grid_cell.kwta_ratio``, ``--grid-cell``) where its gates agree with it,
    for the activation column to show instead of the largest gate's measured k/N (``top-k 0.1``, not ``top-k
    0.0972`` for a top-k set to 0.1 that keeps ``round(0.1 · 144) = 14`` of a 12 × 12 channel): the gates show one
    k/N (:func:`probe_ratio`) and every gate's k, module and inline, at each input shape, is the k the declared
    ratio gives (:func:`fits_every_gate`: ours, :func:`expected_k`, or ``ratio · N`` rounded either way; the rule
    :func:`kwta_robust.matrix_checks.declarable_ratio` suggests a declaration by). ``None`` otherwise (nothing
    declared, the ReLU twin's 1.0, or a gate the declaration does not fit: the measured k/N is shown then)."""
    cell = record.model.get("grid_cell")
    declared = cell.get("kwta_ratio") if isinstance(cell, Mapping) else None
    if not is_finite_number(declared) or not 0.0 < declared < 1.0 or probe_ratio(record) is None:
        return None
    return float(declared) if fits_every_gate(declared, gate_pairs(record), record.model) else None


def gate_pairs(record: EvalRecord) -> list[tuple[int, int]]:
    """Each ``(k, N)`` the layer probe measured at the record's top-k gates, module gates and those built inline
    (:func:`inline_gate_layers`), at each input shape (:func:`k_per_shape`), counts only (:func:`_counted`): the
    gates a declared ratio is shown by (:func:`declared_ratio`), one to declare is suggested by and a declaration
    is checked against (:func:`kwta_robust.matrix_checks.declarable_ratio`, ``grid_ratio_conflict``)."""
    return entry_pairs(detected_layers(record, "gate") + inline_gate_layers(record))


def entry_pairs(gates: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """Each ``(k, N)`` of the gate entries ``gates`` (``evidence`` with ``k`` and ``group_size``, or
    ``k_per_shape``), at each input shape, counts only (:func:`_counted`: a hand-edited ``k`` of ``"8"``, ``True``
    or above ``N`` is none): :func:`gate_pairs` of a record's gates, and the k/N of a table's module or inline gates
    (:func:`_ratio_grouping`)."""
    return [(k, n) for g in gates for _, k, n in k_per_shape(g.get("evidence") or {}) if _counted(k, n)]


def fits_every_gate(ratio: float, pairs: Sequence[tuple[int, int]], model: Mapping) -> bool:
    """Whether there are gates (``pairs``: each measured ``(k, N)``) and every one keeps the k ``ratio`` gives: ours
    (:func:`expected_k`, with ``model``'s ``k_inference_factor``) or ``ratio · N`` (times that factor) rounded
    either way, as other implementations round it (at least 1, at most N): the rule a declared ratio is shown by
    (:func:`declared_ratio`) and a ratio to declare is suggested by
    (:func:`kwta_robust.matrix_checks.declarable_ratio`). Not :data:`K_TOLERANCE` around ours: where ``ratio · N``
    is a whole number, one unit either side is another k/N (a declared 0.5 on gates keeping 1 of 4 was shown as
    ``top-k 0.5``, hiding the measured 0.25)."""
    return bool(pairs) and all(_keeps(ratio, k, n, model) for k, n in pairs)


def _keeps(ratio: float, k: int, n: int, model: Mapping) -> bool:
    """Whether a gate keeping ``k`` of ``n`` keeps the k ``ratio`` gives (:func:`fits_every_gate`)."""
    factor = model.get("k_inference_factor")
    exact = ratio * n * (factor if is_finite_number(factor) and factor > 0 else 1.0)
    low, high = min(n, max(1, math.floor(exact))), min(n, max(1, math.ceil(exact)))
    return k == expected_k(ratio, n, model) or low <= k <= high


def inline_selections(record: EvalRecord) -> list[dict]:
    """The selections of ``record.detection`` that built a top-k gate inline in a module's ``forward`` (``gate``,
    its grouping: :func:`~kwta_robust.detect_selections.selections_outside`); BPDA relaxes them where they are built
    (``wrapped inline`` in a record's ``bpda_layers``). Records before selections: none. A max-pool gate's
    (``gate: max-pool``, :func:`relaxed_pool_modules`) is none of them."""
    return [s for s in (record.detection or {}).get("selections", []) if s.get("gate")
            and s.get("gate") != POOL_GATE_MARK]


def relaxed_pool_modules(record: EvalRecord) -> set[str]:
    """The modules whose ``forward`` builds a max-pool winner-take-all gate BPDA's smooth surrogate relaxes
    (selections with ``gate: max-pool``: :mod:`attacks.pool_relax`); ``""`` the model's own."""
    return {str((s.get("modules") or [""])[-1]) for s in (record.detection or {}).get("selections", [])
            if s.get("gate") == POOL_GATE_MARK}


def inline_gate_count(inline: list[dict]) -> int:
    """How many gates the selections ``inline`` built: per module whose ``forward`` builds them, the fewest one call
    built (``gates``, where two or more) or its selections with a gate, whichever is more (a shared block is one).
    Where the forward's gates came from several selections (``own_gates`` on some entry), only those the selections
    of ``inline`` built (each one's ``own_gates``, else ``gates``), at most ``gates``: a max-pool gate of the same
    ``forward`` (``gate: max-pool``, not in ``inline``) is no top-k gate, counted as max-pool WTA."""
    per_module: dict[str, list[dict]] = {}
    for s in inline:
        per_module.setdefault(str((s.get("modules") or [""])[-1]), []).append(s)
    total = 0
    for found in per_module.values():
        gates = max(int(s.get("gates", 1)) for s in found)
        if any("own_gates" in s for s in found):
            gates = min(gates, sum(int(s.get("own_gates", s.get("gates", 1))) for s in found))
        total += max(len(found), gates)
    return total


def inline_text(selection: dict) -> str:
    """One gate built inline as ``block (inline): top-k gate (block-2, k=8/32, built from max)`` for the notes: its
    module (:func:`module_text`), grouping, k of the group size where recorded (records before had none; each, ``k=4/16,
    4/64 across its gates``, where its gates differ: :func:`inline_k`), selection operation and, where one call of
    the forward built two gates or more, how many (``2 of the 3 gates per call of its forward`` where they came from
    several selections: ``own_gates``)."""
    inner = (selection.get("modules") or [""])[-1]
    gates, own = int(selection.get("gates", 1)), selection.get("own_gates")
    if isinstance(own, int) and own < gates:  # the forward's gates came from several selections: this one's share
        extra = [f"{own} of the {gates} gates per call of its forward"] if own > 0 else []
    else:
        extra = [f"{gates} gates per call"] if gates >= 2 else []
    extra += ["read with ties broken by seeded noise"] if selection.get("ties_broken") else []
    pairs = inline_k(selection)
    across = " across its gates" if len(pairs) > 1 else ""
    k_text = [f"k={', '.join(f'{k}/{n}' for k, n in pairs)}{across}"] if pairs else []
    parts = [str(selection["gate"]), *k_text, f"built from {selection.get('op')}", *extra]
    return f"{module_text(inner)} (inline): top-k gate ({', '.join(parts)})"


def _counted(k: Any, size: Any) -> bool:
    """Whether ``k`` of ``size`` is a gate's count: integers, ``0 < k <= size``."""
    return all(isinstance(v, int) and not isinstance(v, bool) for v in (k, size)) and 0 < k <= size


def inline_k(selection: dict) -> list[tuple[int, int]]:
    """Each ``(k, group_size)`` the gates an inline selection built showed: its ``k_seen`` where its gates differ (a
    block called on two widths, gates of other k in one ``forward``), else its ``k`` of ``group_size``; none where
    the entry records no count (records before did not). Records whose ``k_seen`` was not kept held the first
    gate's k alone, as if every gate had it."""
    seen = selection.get("k_seen")
    pairs = [(p[0], p[1]) for p in (seen if isinstance(seen, list) else ())
             if isinstance(p, (list, tuple)) and len(p) == 2 and _counted(*p)]
    k, size = selection.get("k"), selection.get("group_size")
    return pairs or ([(k, size)] if _counted(k, size) else [])


def module_text(name: str) -> str:
    """A module's name as the tables and notes show it: the model itself (the root module, ``""``) as ``(model)``."""
    return name or ROOT_TEXT


def inline_gate_layers(record: EvalRecord) -> list[dict]:
    """The gates built inline (:func:`inline_selections`) as the layer probe's gate entries (``name``, ``kinds``,
    ``grouping``, ``evidence``) read them, one per module and k/N: ``name`` is ``NAME (inline)``
    (:func:`module_text`), ``evidence`` holds ``k`` and ``group_size`` where the selection recorded them (records
    before did not: no k/N to read then, only that the module builds a gate), and ``k_per_shape`` (no shape: each k/N
    of :func:`inline_k`, read by :func:`k_per_shape`) where its gates showed several. What the matrices'
    ``grid-cell-ratio`` and placement read beside the module gates (:mod:`kwta_robust.matrix_checks`)."""
    found: dict[tuple, dict] = {}
    for s in inline_selections(record):
        name = f"{module_text(str((s.get('modules') or [''])[-1]))} (inline)"
        pairs = inline_k(s)
        evidence: dict = {"k": pairs[0][0], "group_size": pairs[0][1]} if pairs else {}
        if len(pairs) > 1:
            evidence["k_per_shape"] = [[None, k, n] for k, n in pairs]
        found.setdefault((name, tuple(pairs)),
                         {"name": name, "kinds": ["gate"], "grouping": s.get("gate"), "evidence": evidence})
    return list(found.values())


def common_ratio(pairs: list[tuple[int, int]]) -> float | None:
    """The one k/N every ``(k, N)`` of a model's gates shows — the largest group's, the most exact — or ``None``
    (no pairs, or several ratios). One ratio: every k/N reads alike to three significant digits, or every k is
    within 2 units of the largest group's k/N times its N: implementations take ``ratio · N`` rounded down,
    truncated or rounded up, one unit apart, so Xiao et al.'s ``int(0.1 · 4096) = 409`` (0.0999) beside
    ``int(0.1 · 8192) = 819`` (0.1) is one ratio, 0.1 (it had read as two, and the model's tables showed none)."""
    if not pairs:
        return None
    k0, n0 = max(pairs, key=lambda pair: pair[1])
    one = len({f"{k / n:.3g}" for k, n in pairs}) == 1 or all(abs(k * n0 - k0 * n) <= 2 * n0 for k, n in pairs)
    return k0 / n0 if one else None


def k_per_shape(evidence: dict) -> list[list]:
    """``[[shape, k, group size], ...]`` of a gate's evidence: one per input shape (a gate shared by layers)."""
    return evidence.get("k_per_shape") or [[evidence.get("shape"), evidence.get("k"), evidence.get("group_size")]]


def layer_text(layer: dict, relaxed: Collection[str] = ()) -> str:
    """One probed layer as ``name (Class): top-k gate (grouping, k=k/N), ...`` for the notes (``relaxed``: the
    modules whose max-pool gate BPDA relaxes, :func:`relaxed_pool_modules`)."""
    ev = layer.get("evidence") or {}
    shapes = k_per_shape(ev)
    unit = " channels" if ev.get("statistic") else ""  # a gate keeping whole channels (Xiao et al.'s Sparsify2D_all)
    k_text = ", ".join(f"{k}/{size}{unit}" for _, k, size in shapes) + (" at its input shapes" if len(shapes) > 1
                                                                        else "")
    if ev.get("statistic"):
        k_text += f", ranked by their {ev['statistic']}"
        ties = ev.get("statistic_ties") or ()  # other statistics that order the kept channels on these samples too
        if ties:
            k_text += (f" ({' and '.join(ties)} explain{'s' if len(ties) == 1 else ''} it too on these samples)")
    factors = ev.get("score_factors")
    if factors:  # a gate ranking boosted scores b_u · x (Numenta's boosting): the spread of the fitted b_u
        k_text += (f", on boosted scores: {len(factors)} unit factors fitted, "
                   f"{min(factors):.2f}–{max(factors):.2f}")
    if ev.get("output") == "mask":  # the module returns the gate's 0/1 mask, which its parent applies
        k_text += ", returns the 0/1 mask"
    if ev.get("gate_calls"):  # a shared gate that showed none at some calls (keeping all: k >= the units there)
        k_text += f", a gate at {ev['gate_calls']} of its {ev.get('calls')} calls"
    grouping = layer.get("grouping") or "grouping read at each call"  # calls of other groupings (a shared gate)
    kinds = [f"top-k gate ({grouping}, k={k_text})" if k == "gate" else pool_gate_text(ev, layer.get("name") in relaxed)
             if k == POOL_GATE else k
             for k in layer.get("kinds", [])]
    return f"{layer.get('name')} ({layer.get('module_class')}): {', '.join(kinds) or 'BPDA-capable'}"


def pool_gate_text(evidence: dict, relaxed: bool = False) -> str:
    """A max-pool winner-take-all gate (attacks/pool_gates.py) as ``max-pool winner-take-all gate (max_pool2d, 14.1%
    of units kept, returns the 0/1 mask; bpda_layers: auto leaves it out)``: no grouping or k, which it has none of;
    ``relaxed`` (its forward returns the gate: attacks/pool_relax.py): ``...; BPDA's smooth surrogate relaxes it)``."""
    pools = evidence.get("pools") or []
    density = evidence.get("density")
    parts = [", ".join(str(p) for p in pools)] if pools else []
    parts += [f"{100 * density:.3g}% of units kept"] if isinstance(density, (int, float)) else []
    parts += ["returns the 0/1 mask"] if evidence.get("output") == "mask" else []
    what = "BPDA's smooth surrogate relaxes it" if relaxed else "bpda_layers: auto leaves it out"
    return f"max-pool winner-take-all gate ({', '.join(parts) or 'from a max-pool'}; {what})"


def layer_notes(record: EvalRecord) -> list[str]:
    """What the layer probe found, and per BPDA attack the layers it acted on (records before schema 2: none)."""
    notes = []
    if record.detection:
        relaxed, layers = relaxed_pool_modules(record), record.detection.get("layers", [])
        leaves = {str(layer.get("name")) for layer in layers}
        found = "; ".join([layer_text(layer, relaxed) for layer in layers]
                          + [inline_text(s) for s in inline_selections(record)]
                          + [f"{module_text(name)} (inline): {pool_gate_text({}, True)}" for name in sorted(relaxed)
                             if name not in leaves] + routing_notes(record.detection))
        notes.append(f"layer probe ({record.detection.get('n')} inputs, {record.detection.get('probed')} leaf "
                     f"modules): {found or 'no top-k gate, piecewise-constant or randomized layer'}")
    return notes + [_acted_text(label, layers) for label, layers in _acted(record).items()]


def routing_notes(detection: dict) -> list[str]:
    """One note per module whose ``forward`` makes a top-k that routes (selection entries with ``routes``:
    :mod:`kwta_robust.routed_selections`), which no BPDA surrogate relaxes; records before have none."""
    how = {"-inf": "losers set to -inf before a softmax: attention or expert gating",
           "indices": "its indices pick experts' outputs"}
    routed = {(s.get("modules") or [""])[-1]: how.get(s["routes"], s["routes"])
              for s in detection.get("selections") or () if s.get("routes")}
    return [f"{module_text(name)}: top-k routing ({what}), out of scope for BPDA "
            "(selections-outside-layers)" for name, what in routed.items()]


def _acted(record: EvalRecord) -> dict[str, dict]:
    """Per BPDA attack label, the layers it acted on (name -> how), as its first result recorded them."""
    acted: dict[str, dict] = {}
    for r in record.results:
        if r.bpda_layers is not None:
            acted.setdefault(r.label, r.bpda_layers)
    return acted


def _acted_text(label: str, layers: dict) -> str:
    return f"{label} acted on: " + (", ".join(f"{module_text(n)} ({how})" for n, how in layers.items()) or "no layer")


def acted_on_notes(records: Sequence[EvalRecord]) -> list[str]:
    """Per record, the layers each BPDA attack acted on where it acted on some (one that acted on none carries the
    ``bpda-no-layer`` flag), prefixed with the record's label when there are several: the side-by-side tables of
    ``compare`` and ``table`` showed how many gates the probe found, not whether BPDA relaxed them."""
    return [("" if len(records) == 1 else f"[{rec.label}] ") + _acted_text(label, layers)
            for rec in records for label, layers in _acted(rec).items() if layers]
