"""The flags and refusals around a max-pool winner-take-all gate written as a module (layer probe kind
``max-pool-gate``, tests/test_pool_module_poolgate.py). ``selections-outside-layers`` said the model called the
max-pool "outside every layer the layer probe classifies" where the probe had classified the module, as such a gate;
``bpda-no-layer`` beside it advised naming a gate the probe missed (``bpda_layers: [NAME]``), which is refused for
the smooth surrogate, the default; and a BPDA sanity attack (``diagnostics.sanity``) on a top-level ``bpda_layers``
naming the gate ran the smooth surrogate on it, relaxed as a top-k, where a BPDA attack of ``attacks`` is refused.
Since BPDA relaxes the gates returned as a result (attacks/pool_relax.py), these flags and refusals concern the forms
it cannot relax: the gate made in place by ``nonzero`` indices, its 0/1 mask returned for the parent to apply (made
in place as ``h[h < p] = 0`` it is relaxed with no flag now: attacks/pool_in_place.py)."""

from __future__ import annotations

import logging

import pytest

import gates_styles as styles
from kwta_robust.config import EvalConfig
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.results import EvalRecord, Flag
from kwta_robust.selection_text import outside_text, pool_gates_text
from test_pool_module_poolgate import MODELS, InPlace, named, sequential
from test_detect_inline_gates import config, data
from test_wild_lwta import PGD_THEN_BPDA
from wild_kwta_models import X

PROBE_READ = "which the layer probe read as a max-pool winner-take-all gate BPDA cannot relax"
NONZERO = "made in place by nonzero indices"
MISSED = "if the model has a gate the probe missed, name it (bpda_layers: [NAME] or --bpda-layer NAME)"


def flag(record: EvalRecord, code: str) -> Flag:
    (found,) = [f for f in run_checks(record) if f.code == code]
    return found


@pytest.fixture(scope="module")
def records() -> dict[str, EvalRecord]:
    """PGD then smooth BPDA (``bpda_layers: auto``) on a model per test_pool_module_poolgate.MODELS entry used here,
    and on the same gate written inline in a residual block (``styles.net``: no module the probe classifies)."""
    builds = {name: MODELS[name][0] for name in ("made in place", NONZERO, "its mask, applied by the parent")}
    builds["inline"] = lambda: styles.net("pool_max")
    made = {}
    for name, build in builds.items():
        model = build()
        made[name] = evaluate(model, data(model, X), config(batch_size=16, attacks=PGD_THEN_BPDA), {}, progress=False)
    return made


@pytest.mark.parametrize("name", [NONZERO, "its mask, applied by the parent"])
def test_the_selection_flag_says_the_probe_read_the_module_as_a_max_pool_gate(records: dict[str, EvalRecord],
                                                                              name: str) -> None:
    gate = MODELS[name][1]
    message = flag(records[name], "selections-outside-layers").message
    assert message.startswith(f"the model calls max_pool2d in the forward of {gate} (1 call(s) a forward), "
                              f"{PROBE_READ}, so no BPDA attack replaced it: ")
    assert "outside every layer" not in message  # the probe did classify it


@pytest.mark.parametrize("name", ["inline", "made in place"])
def test_a_gate_written_inline_or_made_in_place_is_relaxed_with_no_flag(records: dict[str, EvalRecord],
                                                                       name: str) -> None:
    gate = "1" if name == "inline" else MODELS[name][1]
    assert records[name].result("bpda", "linf", 0.1).bpda_layers == {gate: "wrapped inline"}
    assert [f for f in run_checks(records[name]) if f.code in ("selections-outside-layers", "bpda-no-layer")] == []


def test_bpda_no_layer_names_the_max_pool_gate_instead_of_advising_to_name_a_missed_gate(
        records: dict[str, EvalRecord]) -> None:
    found = flag(records[NONZERO], "bpda-no-layer")
    assert MISSED not in found.message  # naming it for the smooth surrogate is refused
    assert found.message.endswith(
        "its column is a plain pgd result; the layer probe read 1.gate (InPlace) as a winner-take-all gate built "
        "from a max-pool (max-pool-gate), which bpda_layers: auto leaves out and the smooth surrogate cannot relax "
        "(naming it for smooth is refused): name it for surrogate: model (bpda_layers: [1.gate]) and add gradient "
        "estimation and square")
    assert found.evidence["pool_gates"] == ["1.gate"]


def test_the_advice_of_bpda_no_layer_acts_on_the_gate() -> None:
    build, gate = MODELS["pool_max"]
    model = build()
    record = evaluate(model, data(model, X), config(batch_size=8, attacks=named("model")), {}, progress=False)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {gate: "wrapped inline"}  # its gate: an inline one
    assert [f for f in run_checks(record) if f.code in ("bpda-no-layer", "selections-outside-layers")] == []


def sanity_config(surrogate: str) -> EvalConfig:
    """PGD alone, the top-level ``bpda_layers`` naming the gate ``1``, a BPDA sanity attack with ``surrogate``."""
    sanity = {"norm": "linf", "eps": 1, "attack": "bpda", "params": {"surrogate": surrogate,
                                                                      "inner_params": {"steps": 2}}}
    return config(batch_size=8, attacks=[PGD_THEN_BPDA[0]], bpda_layers=["1"], diagnostics={
        "enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}, "sanity": sanity})


def test_a_smooth_bpda_sanity_attack_on_a_named_max_pool_gate_is_refused_before_the_clean_pass(
        caplog: pytest.LogCaptureFixture) -> None:
    model = sequential(InPlace("nonzero"))
    with caplog.at_level(logging.INFO), pytest.raises(ConfigError) as caught:
        evaluate(model, data(model, X), sanity_config("smooth"), {}, progress=False)
    assert str(caught.value).startswith(
        "bpda_layers (the diagnostics.sanity bpda attack's layers): 1 is a winner-take-all built from a max-pool "
        "(layer probe: max-pool-gate) in a form the smooth surrogate cannot relax (its 0/1 mask returned for the "
        "parent to apply, or made in place, not as h.mul_(h == p) or h[h != p] = 0), so it would relax it as a top-k "
        "gate")
    assert not any("clean accuracy" in r.getMessage() for r in caplog.records)  # refused before the clean pass
    model = MODELS["pool_max"][0]()  # its gate a result: relaxed (tests/test_pool_relax.py)
    (sanity,) = evaluate(model, data(model, X), sanity_config("smooth"), {}, progress=False).sanity
    assert sanity.bpda_layers == {"1": "wrapped inline"}


def test_a_straight_through_bpda_sanity_attack_on_it_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    model = MODELS["pool_max"][0]()
    with caplog.at_level(logging.INFO):
        record = evaluate(model, data(model, X), sanity_config("identity"), {}, progress=False)
    (sanity,) = record.sanity
    assert (sanity.label, sanity.robust.n) == ("sanity-bpda", len(X))
    assert any("clean accuracy" in r.getMessage() for r in caplog.records)  # the line the refusal above never logs


def test_a_max_pool_gate_beside_a_call_outside_every_layer_gets_a_clause_each() -> None:
    topk = {"op": "topk", "kind": "selection", "modules": ["", "head"], "calls": 2, "probed": False}
    pools = [{"op": "max_pool2d", "kind": "selection", "modules": ["", name], "calls": 1, "probed": True,
              "keeps_shape": True} for name in ("b", "a")]
    does, advice = outside_text([pools[0], topk, pools[1]], ["a", "b"])
    assert does == (
        "calls topk in the forward of head (2 call(s) a forward), outside every layer the layer probe classifies (a "
        "top-k written as a function call, inside a module with children, or in a module called with keyword "
        "arguments or returning more than one tensor) and calls max_pool2d in the forward of b (1 call(s) a forward); "
        "max_pool2d in the forward of a (1 call(s) a forward), which the layer probe read as max-pool "
        "winner-take-all gates BPDA cannot relax")
    assert advice[-1] == ("a winner-take-all built from a max-pool (in a, b) has no smooth relaxation here and "
                          "bpda_layers: auto leaves them out: name them for surrogate: model (bpda_layers: [a, b]) and "
                          "add gradient estimation and square")
    assert pool_gates_text([{"name": "a", "module_class": "Gate"}, {"name": "b", "module_class": "Gate"}]) == (
        "the layer probe read a (Gate), b (Gate) as winner-take-all gates built from a max-pool (max-pool-gate), "
        "which bpda_layers: auto leaves out and the smooth surrogate cannot relax (naming them for smooth is "
        "refused): name them for surrogate: model (bpda_layers: [a, b]) and add gradient estimation and square")
