"""Mutation review of session 47's small helpers (kwta_robust.unread_winners, relu_winners, diff_labels, grid_cell,
numbers.signed_number_text, budget_check.kills_lower_bound): each test kills a mutant the existing tests let live, on
hand-made inputs."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from kwta_robust.budget_check import kills_lower_bound
from kwta_robust.diff_labels import detail_words, entry_words
from kwta_robust.errors import ConfigError, KwtaRobustError
from kwta_robust.grid_cell import parse_grid_cell
from kwta_robust.numbers import signed_number_text
from kwta_robust.relu_winners import zeroes_negative_winners
from kwta_robust.unread_winners import unread_winners


def test_unread_winners_counts_each_call_of_a_forward_without_a_gate_sorted() -> None:
    """Per forward (its module stack): the calls counted per op, only in forwards that built no gate, sorted by op."""
    z, blk, g = ("", "z"), ("", "blk"), ("", "g")
    one_winner = {z: [("selection", "max", z)],
                  blk: [("selection", "amax", blk), ("selection", "amax", blk), ("selection", "argmax", blk)],
                  g: [("selection", "argmax", g)]}
    gates = {("selection", "topk", g): object()}  # g built a gate: its argmax was read
    assert unread_winners(one_winner, gates) == [{"op": "amax", "modules": ["", "blk"], "calls": 2},
                                                 {"op": "argmax", "modules": ["", "blk"], "calls": 1},
                                                 {"op": "max", "modules": ["", "z"], "calls": 1}]


def _top(k: int, relu: bool):
    def call(h: Tensor) -> Tensor:
        vals, idx = h.topk(k, dim=-1)
        return torch.zeros_like(h).scatter(-1, idx, torch.relu(vals) if relu else vals)
    return call


X = torch.rand(4, 8, generator=torch.Generator().manual_seed(0)) + 0.1  # every unit positive: winners too


def test_a_top_k_then_relu_zeroes_negative_winners_and_a_top_1_gate_does_not() -> None:
    """A top-1 gate keeps its one winner of the input moved below 0, even where the input's largest unit is its
    largest magnitude (moving by that alone would leave the winner at 0, which reads as a ReLU's zero)."""
    assert zeroes_negative_winners(_top(2, True), X, _top(2, True)(X))
    for k in (1, 2):
        assert not zeroes_negative_winners(_top(k, False), X, _top(k, False)(X))
        one = X[:1]  # its largest unit is the batch's largest magnitude
        assert not zeroes_negative_winners(_top(k, False), one, _top(k, False)(one))


def test_relu_winners_reads_no_negative_all_zero_or_reshaped_output() -> None:
    zeros = torch.zeros_like
    out = _top(2, True)(X)
    assert not zeroes_negative_winners(zeros, X, out - 0.05)  # an output with a negative element: no ReLU after
    assert not zeroes_negative_winners(zeros, X, zeros(out))  # nothing kept on the probe batch: nothing to read
    assert not zeroes_negative_winners(lambda h: torch.zeros(h.shape[0], 2), X, out)  # another shape on the move


def test_an_entry_with_a_bool_eps_names_no_threat_point() -> None:
    assert entry_words("worst_case", {"norm": "linf", "eps": 0.1}) == "Linf 0.1"
    assert entry_words("worst_case", {"norm": "linf", "eps": True}) == ""


def test_a_noise_level_past_the_probes_levels_is_named_by_its_index() -> None:
    probe = {"kind": "numenta", "result": {"levels": [0.0]}}
    ids = [10, 11, 12]
    assert detail_words("noise", probe, ".result.correct_counts[0][2]", ids, ids) == \
        "level 0.0, sample 2, data set id 12"
    assert detail_words("noise", probe, ".result.correct_counts[1][2]", ids, ids) == \
        "level [1], sample 2, data set id 12"


def test_a_sample_is_named_by_the_ids_each_record_holds() -> None:
    assert detail_words("", None, "clean_flags[1]", [5, 6], [5, 7]) == \
        "sample 1, data set id 6 in the first, 7 in the second"
    assert detail_words("", None, "clean_flags[1]", [5, 6], [5]) == "sample 1, data set id 6"
    assert detail_words("", None, "clean_flags[1]", [5], [5, 7]) == "sample 1, data set id 7"
    assert detail_words("", None, "clean_flags[1]", [5], []) == "sample 1"


def test_a_grid_cell_may_end_in_a_comma_and_space_its_values_and_an_empty_one_is_shown_as_given() -> None:
    assert parse_grid_cell("kwta_ratio=0.1, weight_sparsity=0.5,") == {"kwta_ratio": 0.1, "weight_sparsity": 0.5,
                                                                       "pruning_method": "declared"}
    assert parse_grid_cell("kwta_ratio = 0.1, weight_sparsity = 0.5, pruning_method = magnitude") == {
        "kwta_ratio": 0.1, "weight_sparsity": 0.5, "pruning_method": "magnitude"}
    with pytest.raises(ConfigError) as raised:
        parse_grid_cell(" ")
    assert str(raised.value) == ("--grid-cell: write e.g. kwta_ratio=0.1,weight_sparsity=0.5 (optionally "
                                 ",pruning_method=magnitude); got ' '")


def test_a_signed_number_rounding_to_zero_has_no_sign() -> None:
    assert [signed_number_text(v) for v in (0.0, 0.004, -0.004, -0.005, 0.125)] == \
        ["0.00", "0.00", "0.00", "-0.01", "+0.13"]


def test_the_kills_bound_refuses_a_sample_larger_than_its_population() -> None:
    assert kills_lower_bound(2, 3, 3) == 2  # the sample is the whole population: its kills
    with pytest.raises(KwtaRobustError, match=r"need 0 <= broken \(1\) <= sampled \(4\) <= population \(3\)"):
        kills_lower_bound(1, 4, 3)
