"""Mutation review (session 47) of the selection entries and the checks of inline and max-pool gates: each test kills
a mutant of kwta_robust/selection_entries.py, detect.py, straight_through.py or detect_selections.py that the tests
before let survive."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor, nn

from attacks.pool_relax import POOL_GATE_MARK
from kwta_robust.detect import (POOL_GATE, Detection, LayerFinding, log_findings, unnoted_pool_gates,
                                unrelaxed_pool_gates)
from kwta_robust.errors import ConfigError
from kwta_robust.selection_entries import held_by
from kwta_robust.straight_through import check_inline_gates
from test_inline_shapes_inlineshapes import Block, _selections


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


def test_a_max_pool_gate_whose_forward_built_a_readable_gate_is_noted_and_not_named_again() -> None:
    pool = {"op": "max_pool2d", "kind": "selection", "modules": ["", "1"], "calls": 1, "gate": POOL_GATE_MARK}
    layers = [LayerFinding("1", "Block", [POOL_GATE])]
    assert unnoted_pool_gates(Detection(layers=layers, selections=[pool])) == []  # BPDA relaxes it: no flag
    assert [e["modules"] for e in unnoted_pool_gates(Detection(layers=layers))] == [["", "1"]]


def test_a_block_called_twice_on_one_width_keeps_no_list_of_k_seen() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.out, self.block = nn.Linear(64, 16), nn.Linear(16, 16), nn.Linear(16, 3), Block(4)

        def forward(self, x: Tensor) -> Tensor:  # two gates of 4 of 16
            h = self.block(torch.relu(self.fc1(x.flatten(1))))
            return self.out(self.block(torch.relu(self.fc2(h))))

    torch.manual_seed(0)
    (entry,) = [s for s in _selections(Twice()) if s.get("gate")]
    assert (entry["k"], entry["group_size"], entry["calls"]) == (4, 16, 2) and "k_seen" not in entry


def test_the_probe_logs_a_relaxable_max_pool_gate_as_relaxed_not_as_one_bpda_cannot_relax(
        caplog: pytest.LogCaptureFixture) -> None:
    pool = {"op": "max_pool2d", "kind": "selection", "modules": ["", "1"], "calls": 1, "gate": POOL_GATE_MARK}
    with caplog.at_level(logging.INFO, logger="kwta_robust.detect"):
        log_findings(Detection(layers=[LayerFinding("1", "Block", [POOL_GATE])], selections=[pool]))
    assert "BPDA cannot relax" not in caplog.text
    assert ("the model builds a winner-take-all gate from a max-pool: max_pool2d in the forward of 1; BPDA's smooth "
            "surrogate relaxes it") in caplog.text


def test_a_top_k_gate_inline_in_a_max_pool_gate_bpda_cannot_relax_is_not_refused() -> None:
    topk = {"op": "topk", "kind": "selection", "modules": ["", "1"], "calls": 1, "gate": "dense"}
    detection = {"layers": [{"name": "1", "kinds": [POOL_GATE]}], "selections": [topk]}
    check_inline_gates(detection, [("smooth", {})], ["attacks[0].bpda_layers"])  # auto leaves it out, flags name it
    with pytest.raises(ConfigError, match=r"^attacks\[0\].bpda_layers: the model builds a top-k gate inline"):
        check_inline_gates({"selections": [topk]}, [("smooth", {})], ["attacks[0].bpda_layers"])


def test_a_learned_surrogate_not_on_the_root_is_told_to_add_auto_for_the_roots_inline_gate() -> None:
    root = {"op": "topk", "kind": "selection", "modules": [""], "calls": 1, "gate": "dense"}
    with pytest.raises(ConfigError) as info:
        check_inline_gates({"selections": [root]}, [("learned", {"block"})], ["attacks[0].bpda_layers"])
    assert "would leave in place" in str(info.value) and "add auto to attacks[0].bpda_layers" in str(info.value)
