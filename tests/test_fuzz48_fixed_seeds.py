"""Fixed seeds of the third wild-model fuzzer (models: tests/fuzz48_wild.py — top-k forms beyond kWTA activations:
top-k attention with ``-inf`` before the softmax (Zhao et al. 2019), mixture-of-experts noisy top-k gating and
routing (Shazeer et al. 2017), top-k by ``sort`` / ``argsort`` then ``gather``, thresholds from a detached score's
``quantile`` / ``kthvalue``, a user's straight-through estimator around a top-k mask; as leaf modules, inline in a
block or in the model's own ``forward``), each run the way a user runs the library (``evaluate_model``: PGD and BPDA
smooth and identity, 2 steps, L∞ 0.1, 4–6 samples) and held to the invariants of tests/test_fuzz46_fixed_seeds.py
and to this fuzzer's own (:func:`check_forms`): a unit top-k (sort, detached, straight-through) is acted on by BPDA
(k-max pooling and a straight-through mask off by an ulp, no exact gate: flagged critical, or refused in one line);
a routing one (attention, experts) is acted on as a gate (a top-1 attention's one-hot, read as a 0/1 mask) or named
in a critical ``selections-outside-layers`` flag saying it routes, out of scope for BPDA — never left to a BPDA that
acts on something else (an expert's ReLU) or on nothing, unflagged. Of 401 seeds (0–400) run on the code before, 132
broke it (none since; 2 refused in one line, before and since): 114 (a top-3 router before its experts: an expert's
ReLU read as the router's gate, BPDA ``wrapped inline`` on the MoE block with the routing mask cutting the gradient
and no flag: tests/test_routed_selections.py); 3 (experts picked by a top-3 router's indices), 20 (a top-2 router's
``-1e9`` before the softmax), 28 (top-2 attention by ``torch.where(…, finfo.min)`` inline in a block) and 42 (top-3
attention by ``kthvalue`` in the model's own ``forward``): flagged as unread top-k selections with the advice to
move them into a module of their own or name them in ``bpda_layers``, whose BPDA would pass the gradient straight
through the softmax or the expert choice."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import fuzz48_wild as wild
from kwta_robust.api import evaluate_model
from test_fuzz46_fixed_seeds import CONFIG, check_invariants, state

ROUTING = "a top-k that routes rather than gates units"
#: Unit top-k forms that build no exact ``x · mask`` (k-max pooling's sorted values; a straight-through mask
#: ``mask + s - s.detach()``, whose winners are off by an ulp): flagged critical, not relaxed.
UNREAD = ("sort_slice", "ste_sigmoid")


def check_forms(record: Any, sites: list[str], description: str) -> None:
    """This fuzzer's invariants (module docstring) on an evaluated ``record`` of ``fuzz48_wild.build``'s model."""
    acted = {name for r in record.results if r.bpda_layers for name in r.bpda_layers}
    flags = [f for f in record.diagnostics if f.code == "selections-outside-layers" and f.severity == "critical"]
    method, form = description.split()[1].split("/")[0], description.split()[-1]
    for site in sites:
        shown = site or "the model itself"
        if form not in ("attn", "moe"):  # a unit top-k: acted on, or (no exact gate) flagged critical
            named = any(f"forward of {shown} (" in f.message for f in flags)
            assert site in acted if method not in UNREAD else named and site not in acted, (description, sorted(acted))
            continue
        gate = "/k=1/" in description and method not in ("gather", "index")  # softmax of one winner: a 0/1 mask
        named = any(f"{site or '(model)'}: {ROUTING}" in f.message for f in flags)
        assert (site in acted, named) == (gate, not gate), (description, site, sorted(acted),
                                                            [f.message for f in flags])


@pytest.mark.parametrize("seed", [3, 20, 28, 42, 114])
def test_a_fuzzed_model_keeps_the_invariants(seed: int) -> None:
    model, x, sites, description = wild.build(seed)
    with torch.no_grad():
        y = model(x).argmax(1)
    before = state(model)
    record = evaluate_model(model, CONFIG, x, y, threads=1)
    check_invariants(model, record, before, sites, description)
    check_forms(record, sites, description)
