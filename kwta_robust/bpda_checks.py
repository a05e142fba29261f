"""``bpda-straight-through``: BPDA attacks that passed the gradient straight through a module named in
``bpda_layers`` where that approximates nothing, or less than the smooth relaxation would.

Reads ``record.detection["straight_through"]`` (:mod:`kwta_robust.straight_through`) and each BPDA result's
surrogate. BPDA needs a backward approximation ``g`` with ``g(x) ≈ f(x)`` (Athalye, Carlini & Wagner, ICML 2018,
§4.1): the identity is one for a module whose output is its input masked, not for one that maps its input first
(a linear layer and its top-k in one module). Critical there — the attack's numbers are loose upper bounds while
the selection inside counts as handled — and a warning where the smooth surrogate fell back to the identity on a
masking module (a coarser approximation than its relaxation); critical drops to a warning when gradient
estimation or a black-box attack ran (they need no backward).
"""

from __future__ import annotations

from attacks.bpda import DEFAULT_SURROGATE
from kwta_robust.diagnostics_base import CRITICAL, WARNING, Thresholds, gradient_free_labels
from kwta_robust.results import EvalRecord, Flag


def _module_text(name: str, entry: dict) -> str:
    own = int(entry.get("parameters") or 0)
    return f"{name} ({entry.get('module_class')}{f'; {own:,} parameters' if own else ''})"


def check_straight_through(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """One flag over every BPDA attack (smooth or identity surrogate) and unclassified module it acted on."""
    through = (record.detection or {}).get("straight_through") or {}
    wrong: dict[str, set[str]] = {}
    coarse: dict[str, set[str]] = {}
    for r in record.results:
        surrogate = r.params.get("surrogate", DEFAULT_SURROGATE)
        if r.kind != "bpda" or not r.bpda_layers or surrogate not in ("smooth", "identity"):
            continue  # a learned or distilled surrogate fits the module instead of assuming the identity
        for name in r.bpda_layers:
            entry = through.get(name)
            if not entry:  # a layer the probe classified (a gate, piecewise constant) or a native kWTA layer
                continue
            straight = int(entry.get("calls") or 0) - (0 if surrogate == "identity" else int(entry["relaxed_calls"]))
            if straight > 0 and not entry["masks_input"]:
                wrong.setdefault(name, set()).add(r.label)
            elif straight > 0 and surrogate == "smooth":
                coarse.setdefault(name, set()).add(r.label)
    if not wrong and not coarse:
        return []
    free = gradient_free_labels(record)
    parts = []
    for name, labels in wrong.items():
        parts.append(f"{', '.join(sorted(labels))} passed the gradient straight through "
                     f"{_module_text(name, through[name])}, whose output is not its input times a 0/1 mask: it "
                     "maps its input first and the identity backward skips that map, so it approximates nothing "
                     "about the module (BPDA needs g(x) ≈ f(x), Athalye et al. 2018) and these numbers are loose "
                     "upper bounds although the selection inside counts as handled; give BPDA the selection alone "
                     "(a module of its own that returns its input times the mask) and meanwhile trust the plain "
                     "gradient and gradient-free columns")
    for name, labels in coarse.items():
        entry = through[name]
        parts.append(f"{', '.join(sorted(labels))} found no top-k gate (a constant number of winners) in the "
                     f"output of {_module_text(name, entry)} on {entry['calls'] - entry['relaxed_calls']} of its "
                     f"{entry['calls']} probed calls and passed the gradient straight through it there: coarser than "
                     "the smooth relaxation (a ReLU before the top-k or ties vary the count); compare bpda surrogate: "
                     "learned")
    severity = CRITICAL if wrong and not free else WARNING
    message = "; ".join(parts) + (f"; {', '.join(free)} attacked without gradients" if wrong and free else "")
    return [Flag("bpda-straight-through", severity, message,
                 {"wrong": {n: sorted(l) for n, l in wrong.items()},
                  "coarse": {n: sorted(l) for n, l in coarse.items()},
                  "modules": {n: through[n] for n in [*wrong, *coarse]}, "gradient_free": free})]
