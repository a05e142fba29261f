"""Tests that kill hand-made mutants of this session's new code which the new tests let survive: the layer probe's count
of gates made in place on a copy (``_before_in_place``/``_read_in_place``), of in-place operations (``in_place``), of
a readable gate after one made in place (not a view of it: ``_read_gate``) and of a block called with two gates then
one (``call_ended``: the fewest), the config hash of a config JSON cannot encode (``matches_hash``) and of a
probe-only record on resume (``check_resumable``), the earlier index a repeated dataset index names, the own cell of
a record pruned to 0 (``own_cell``) or with no pruning method (``cell_coordinates``), an int just past the int-to-str
limit (``shown``), the 2-unit tolerance of ``common_ratio``, a huge lower bound (``lower_bound_percent_text``) and
the upper bound of a paired interval rounded to zero from below (``paired._bound_text``), every max-pool a pool gate
is built from (``_watch_pools``). Every expected value is derived in the test."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gates_styles as styles
import wild_kwta_models as wild
from attacks.bpda_wrap import LayerTarget
from eval_helpers import make_record, make_result
from kwta_robust.config_digest import config_digest, matches_hash
from kwta_robust.detect import detect_layers
from kwta_robust.detect_selections import in_place
from kwta_robust.errors import ConfigError
from kwta_robust.formats import render_table
from kwta_robust.layer_text import common_ratio
from kwta_robust.matrix import DENSE, RELU_RATIO, cell_coordinates
from kwta_robust.matrix_checks import check_sweep_cell
from kwta_robust.numbers import lower_bound_percent_text, percent_text
from kwta_robust.paired import paired_comparisons, paired_table
from kwta_robust.record_checks import check_record
from kwta_robust.record_values import shown
from kwta_robust.resume import check_resumable
from kwta_robust.results import RecordError
from test_inline_gates_twogates import K, X, built, gate


class SecondGateOnACopy(nn.Module):
    """A readable gate, then a second one assigned in place on a copy of what ``topk`` ranked
    (``g = h.clone(); g[h < t] = 0``: ``__setitem__`` returns nothing to read, and no later result is that gate)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c2(gate(self.c1(x).flatten(1)).view_as(x)).flatten(1)
        g = h.clone()
        g[h < h.topk(K, dim=1).values[:, -1:]] = 0
        return (x.flatten(1) + g).view_as(x)  # no later result reads as that gate (``g.view_as(x)`` would)


class OneGateFilledOnACopy(nn.Module):
    """ONE gate, made in place on a copy by an operation that returns it (``g.masked_fill_(h < t, 0)``): read once as
    a result, it is not counted again as a gate made in place."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c1(x).flatten(1)
        g = h.clone().masked_fill_(h < h.topk(K, dim=1).values[:, -1:], 0)
        return x + g.view_as(x)


def test_a_second_gate_assigned_in_place_on_a_copy_is_counted() -> None:
    detection = detect_layers(built(SecondGateOnACopy), X, log=False)
    assert [(s["op"], s.get("gates")) for s in detection.selections] == [("topk", 2)]
    assert detection.auto_targets() == {"1": LayerTarget("inline", gates=2)}


def test_a_gate_filled_in_place_on_a_copy_and_returned_is_one_gate() -> None:
    detection = detect_layers(built(OneGateFilledOnACopy), X, log=False)
    assert [(s["op"], s.get("gates")) for s in detection.selections] == [("topk", None)]
    assert detection.auto_targets() == {"1": LayerTarget("inline")}


def test_in_place_means_a_trailing_underscore_or_an_in_place_operator_not_any_dunder() -> None:
    assert all(in_place(f) for f in (Tensor.__setitem__, Tensor.__imul__, Tensor.masked_fill_, Tensor.mul_))
    assert not any(in_place(f) for f in (Tensor.__mul__, Tensor.__getitem__, Tensor.__ge__, torch.mul))


def test_a_config_json_cannot_encode_matches_no_hash() -> None:
    plain = {"seed": 0}
    assert matches_hash(plain, config_digest(plain))
    assert not matches_hash({(1, 2): 0}, config_digest(plain))  # a tuple key: json.dumps raises TypeError


def test_resume_refuses_an_edited_config_on_a_record_with_only_its_layer_probe() -> None:
    record = make_record()
    record.clean_flags = []
    assert not (record.results or record.sanity or record.worst_case)  # check_record is not reached
    check_resumable(record, "r.json")
    record.config = {"seed": 1}  # edited under the hash of {"seed": 0}
    with pytest.raises(RecordError, match=r"^r\.json: config_hash does not match config"):
        check_resumable(record, "r.json")


def test_a_repeated_index_names_the_first_place_it_was_listed() -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 0])])
    record.dataset["indices"] = [7, 3, 5, 3]
    with pytest.raises(RecordError, match=r"dataset\.indices\[3\] = 3 repeats dataset\.indices\[1\];"):
        check_record(record)


def test_a_pruning_target_of_zero_is_the_dense_column() -> None:
    model = {"activation": "kwta", "kwta_ratio": 0.1,
             "training": {"pruning": {"method": "magnitude", "target_sparsity": 0.0}}}
    check_sweep_cell("r", {**model, "sweep_cell": {"kwta_ratio": 0.1, "weight_sparsity": 0.0,
                                                    "pruning_method": DENSE}}, RELU_RATIO, DENSE)


def test_a_record_placed_by_its_own_pruning_needs_a_method() -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 0])])
    record.model.update(activation="kwta", kwta_ratio=0.1, training={"pruning": {"target_sparsity": 0.5}})
    with pytest.raises(ConfigError, match=r"model\.training\.pruning\.method is None, not a pruning method's name"):
        cell_coordinates(record)


def test_an_int_just_past_the_int_to_str_limit_is_named_by_its_digits() -> None:
    huge = 10 ** 4300  # 4,301 digits, under the 14,285 bits shown() tries to convert: repr raises ValueError
    assert huge.bit_length() <= 14_285
    assert shown(huge) == "<an integer of 4,301 digits>"


# common_ratio: k is one ratio with the largest group's k0/n0 where |k - k0 · n / n0| <= 2 (k0/n0 = 819/8192 below)
def _units(k: int, n: int) -> float:
    return abs(k - 819 * n / 8192)


@pytest.mark.parametrize("k", [408])  # 411 (1.5 units above) reads 0.1 to three digits
def test_a_gate_within_two_units_of_the_largest_groups_ratio_shows_it(k: int) -> None:
    assert 1 < _units(k, 4096) <= 2 and f"{k / 4096:.3g}" != f"{819 / 8192:.3g}"
    assert common_ratio([(819, 8192), (k, 4096)]) == 819 / 8192


@pytest.mark.parametrize("k", [407, 412])
def test_a_gate_more_than_two_units_off_shows_no_ratio(k: int) -> None:
    assert 2 < _units(k, 4096) < 3 and f"{k / 4096:.3g}" != f"{819 / 8192:.3g}"
    assert common_ratio([(819, 8192), (k, 4096)]) is None


def test_exactly_two_units_off_is_one_ratio() -> None:
    assert abs(412 - 820 * 4096 / 8192) == 2 and f"{412 / 4096:.3g}" != f"{820 / 8192:.3g}"
    assert common_ratio([(820, 8192), (412, 4096)]) == 820 / 8192


def test_ratios_that_read_alike_to_three_digits_are_one_ratio_however_many_units_apart() -> None:
    assert abs(1004 - 10_000 * 10_000 / 100_000) == 4 and f"{1004 / 10_000:.3g}" == f"{10_000 / 100_000:.3g}"
    assert common_ratio([(10_000, 100_000), (1004, 10_000)]) == 0.1


def test_a_huge_lower_bound_is_written_as_percent_text_writes_it() -> None:
    assert lower_bound_percent_text(1e30) == percent_text(1e30)


def test_an_upper_bound_that_rounds_to_zero_from_below_reads_zero() -> None:
    n = 1000
    for m in range(1, 50):  # the fewest samples only the second model keeps that put the upper bound just below 0
        relu = make_record([make_result("pgd", [-1] * m + [0] * (n - m))], label="relu")
        kwta = make_record([make_result("pgd", [0] * n)], label="kwta")
        low, high = paired_comparisons([kwta, relu])[1].interval
        if -0.0005 < high < 0:
            break
    assert -0.0005 < high < 0 and percent_text(high) == "-0.0"
    text = render_table(paired_table([kwta, relu]), "wide")
    assert f"| {percent_text(low)} to 0.0 |" in text and "-0.0 |" not in text


class SecondGateAtFullSize(nn.Module):
    """Two readable gates on an 8 × 8 input, one on a smaller one: called at both sizes in one forward, its fewest
    gates a call built is 1."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        f = self.c1(x).flatten(1)
        h = f * (f >= f.topk(f.shape[1] // 5, dim=1).values[:, -1:])
        if x.shape[-1] == 8:
            h = h * (h >= h.topk(h.shape[1] // 10, dim=1).values[:, -1:])
        return x + h.view_as(x)


def test_a_block_called_with_two_gates_then_one_keeps_the_fewest() -> None:
    def model() -> nn.Module:
        block = SecondGateAtFullSize()
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), block, nn.AvgPool2d(2), block, nn.Flatten(),
                             nn.Linear(64, 3))

    detection = detect_layers(wild.seeded(model), X, log=False)
    assert [(s["op"], s["calls"], s.get("gates")) for s in detection.selections] == [("topk", 3, None)]
    assert detection.auto_targets() == {"1": LayerTarget("inline")}


class InPlaceThenReadable(nn.Module):
    """A gate assigned in place first (``f[f < t] = 0``), then a readable one of as many units on another tensor: the
    second is a new gate, not a view of the first."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        f = self.c1(x).flatten(1)
        f[f < f.topk(K, dim=1).values[:, -1:]] = 0
        return x + gate(self.c2(f.view_as(x)).flatten(1)).view_as(x)


def test_a_readable_gate_after_one_made_in_place_is_counted_as_a_second() -> None:
    detection = detect_layers(built(InPlaceThenReadable), X, log=False)
    assert [(s["op"], s.get("gates")) for s in detection.selections] == [("topk", 2)]
    assert detection.auto_targets() == {"1": LayerTarget("inline", gates=2)}


def test_every_max_pool_a_pool_gate_is_built_from_is_counted() -> None:
    """``h · (h == max(pool₃(h), pool₅(h)))``: a gate built from two max-pools is two calls of a forward."""
    model = wild.seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), styles.Block(
        lambda h: h * (h == torch.maximum(F.max_pool2d(h, 3, 1, 1), F.max_pool2d(h, 5, 1, 2)))), nn.Flatten(),
        nn.Linear(256, 3)))
    assert detect_layers(model, X, log=False).selections == [
        {"op": "max_pool2d", "kind": "selection", "modules": ["", "1"], "calls": 2, "gate": "max-pool",
         "probed": False}]
