"""Mutation review (session 47) of the selection entries and the checks of inline and max-pool gates: each test kills
a mutant of kwta_robust/selection_entries.py, detect.py, straight_through.py or detect_selections.py that the tests
before let survive."""

from __future__ import annotations

from attacks.pool_relax import POOL_GATE_MARK
from kwta_robust.detect import POOL_GATE, Detection, LayerFinding, unrelaxed_pool_gates
from kwta_robust.selection_entries import held_by


def test_acting_on_the_model_itself_does_not_hold_a_gate_a_child_built_inline() -> None:
    child_gate = {"op": "topk", "kind": "selection", "modules": ["", "block"], "calls": 1, "gate": "dense"}
    assert not held_by({""}, child_gate)  # BPDA on the root relaxes its own forward's gate, not the block's
    assert held_by({"block"}, child_gate)


def _pool_layer(*selections: dict) -> dict:
    return {"layers": [{"name": "1", "kinds": [POOL_GATE]}, {"name": "2", "kinds": ["gate"]}],
            "selections": list(selections)}


def test_a_top_k_gate_inline_beside_a_max_pool_gate_does_not_make_it_relaxed() -> None:
    topk = {"op": "topk", "kind": "selection", "modules": ["", "1"], "calls": 1, "gate": "dense"}
    pool = {"op": "max_pool2d", "kind": "selection", "modules": ["", "1"], "calls": 1, "gate": POOL_GATE_MARK}
    assert unrelaxed_pool_gates(_pool_layer(topk)) == {"1"}  # auto leaves it out: its mask is returned or in place
    assert unrelaxed_pool_gates(_pool_layer(topk, pool)) == set()  # a readable max-pool gate: BPDA relaxes it


def test_auto_leaves_out_a_max_pool_gate_it_cannot_relax_with_a_top_k_gate_inline_beside() -> None:
    topk = {"op": "topk", "kind": "selection", "modules": ["", "1"], "calls": 1, "gate": "dense"}
    pool = {"op": "max_pool2d", "kind": "selection", "modules": ["", "1"], "calls": 1, "gate": POOL_GATE_MARK}
    layers = [LayerFinding("1", "Block", [POOL_GATE])]
    assert Detection(layers=layers, selections=[topk]).auto_targets() == {}
    relaxed = Detection(layers=layers, selections=[topk, pool]).auto_targets()
    assert list(relaxed) == ["1"] and relaxed["1"].kind == "inline"
