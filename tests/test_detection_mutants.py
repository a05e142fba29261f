"""Mutation round on the layer probe (kwta_robust/detect.py) and the gate readers (attacks/gates.py,
attacks/gate_factors.py): the bugs it found, and tests for mutants of comparisons, bars and conditions that no other
test told from the code."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.gates import (CONSTANT_K_FRACTION, MAGNITUDE_ORDERED_FRACTION, MIN_MASK_AGREEMENT, candidate_groupings,
                           gate_fit, group_rows, infer_grouping, mask_agreement, selection_score, true_fraction,
                           ungroup_rows)
from attacks.bpda_wrap import LayerTarget
from bpda_models import DenseTopK  # ``topk``'s indices: on tied inputs exactly ``k`` still win
from eval_helpers import make_record
from kwta_robust.detect import Detection, as_input_shape, competing_fraction, detect_layers
from kwta_robust.layer_text import layer_notes


class TopK(nn.Module):
    """Keeps the ``k`` largest of each sample (``[N, F]``); a call on ``k`` units or fewer keeps everything."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        k = min(self.k, x.shape[1])
        return x * (x >= x.topk(k, dim=1).values[:, -1:]).to(x.dtype)


def seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


# --- bug 1: a fraction exactly at a bar of 0.9 (9 of 10 groups) was read in float32 as 0.89999998 < 0.9 -------------

def test_true_fraction_is_exact_where_float32_fell_under_the_bar() -> None:
    nine = torch.tensor([True] * 9 + [False])
    assert float(nine.float().mean()) < 0.9  # what the fractions were
    assert true_fraction(nine) == 0.9 and true_fraction(nine.view(2, 5)) == 0.9
    assert true_fraction(torch.zeros(0, dtype=torch.bool)) == 0.0


def test_a_count_constant_in_exactly_nine_of_ten_groups_is_constant() -> None:
    x = torch.arange(80, dtype=torch.float32).view(10, 8).flip(1) + 1  # each row: 8 distinct values, largest first
    out = x.clone()
    out[:, 2:] = 0  # top-2 in every row ...
    out[9, 2] = x[9, 2]  # ... but the last keeps 3
    fit = infer_grouping(x, out)
    assert fit is not None and (fit.grouping, fit.k) == ("dense", 2)
    assert fit.k_constant_fraction == CONSTANT_K_FRACTION and fit.constant_k  # before: None (0.89999998 < 0.9)


def test_a_gate_ranking_magnitudes_in_exactly_nine_of_ten_groups_is_read_as_magnitude() -> None:
    row = torch.tensor([3.0, -2.5, 1.0, -1.0, 0.5, -0.4, 0.25, 0.1])
    x = row.repeat(10, 1)
    out = torch.zeros_like(x)
    out[:, :2] = x[:, :2]  # the two largest |x|: 3 and -2.5 (not the two largest values)
    out[9, 1], out[9, 5] = 0.0, x[9, 5]  # one row keeps 3 and -0.4: neither the largest values nor magnitudes
    fit = gate_fit(x, out, "dense")
    assert fit.magnitude_ordered_fraction == MAGNITUDE_ORDERED_FRACTION and fit.ordered_fraction == 0.0
    assert fit.score == "magnitude"  # before: "value" (0.89999998 < 0.9), BPDA relaxed the wrong score


# --- bug 2: a gate shared with a call that keeps everything (k = N there) lost its gate kind ------------------------

class SharedGate(nn.Module):
    """One top-4 gate after a 12-unit layer (a gate there) and after a 4-unit layer (keeps all 4: no gate there)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head, self.gate = nn.Linear(6, 12), nn.Linear(12, 4), nn.Linear(4, 2), TopK(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.gate(self.b(self.gate(self.a(x)))))


def test_a_gate_with_a_call_that_keeps_everything_is_still_a_gate() -> None:
    model = seeded(SharedGate).eval()
    found = detect_layers(model, torch.rand(16, 6, generator=torch.Generator().manual_seed(0)))
    gate = found.finding("gate")  # before: no finding at all (a gate kind required in both calls)
    assert gate is not None and (gate.kinds, gate.grouping) == (["gate"], "dense")
    assert (gate.evidence["calls"], gate.evidence["gate_calls"]) == (2, 1)
    assert (gate.evidence["k"], gate.evidence["group_size"], gate.evidence["shape"]) == (4, 12, [16, 12])
    assert gate.evidence["density"] == 4 / 12
    assert "gate" in found.auto_targets()
    record = make_record()
    record.detection = found.to_dict()
    assert layer_notes(record) == ["layer probe (16 inputs, 4 leaf modules): gate (TopK): top-k gate (dense, "
                                   "k=4/12, a gate at 1 of its 2 calls)"]


def test_each_finding_is_logged_with_its_kinds_and_grouping(caplog) -> None:
    with caplog.at_level("INFO", logger="kwta_robust.detect"):
        detect_layers(seeded(SharedGate).eval(), torch.rand(16, 6))
    assert [r.getMessage() for r in caplog.records] == ["layer gate (TopK): gate (dense)"]


def test_a_gate_at_every_call_records_no_gate_calls() -> None:
    class Twice(SharedGate):
        def __init__(self) -> None:
            super().__init__()
            self.b, self.head = nn.Linear(12, 8), nn.Linear(8, 2)

    gate = detect_layers(seeded(Twice).eval(), torch.rand(16, 6)).finding("gate")
    assert gate is not None and gate.kinds == ["gate"] and gate.evidence["calls"] == 2
    assert "gate_calls" not in gate.evidence


# --- bug 3: a finer grouping with a constant count that does not explain its winners hid a coarser one that does ----

def test_a_local_gate_on_one_sample_whose_channels_win_equally_often_is_local() -> None:
    """One sample, two channels, two locations: a local top-1 keeps channel 0 at one location and channel 1 at the
    other, so each channel has one winner too — a constant count per channel, whose winners are not the channel's
    largest (channel 0 keeps 1 and drops 5). The loop stopped at "channel" and never tried "local"."""
    x = torch.tensor([[[1.0, 5.0], [0.5, 6.0]]])  # [1, C=2, L=2]
    out = torch.tensor([[[1.0, 0.0], [0.0, 6.0]]])
    assert gate_fit(x, out, "channel").constant_k and gate_fit(x, out, "channel").ordered_fraction == 0.5
    fit = infer_grouping(x, out)
    assert fit is not None and (fit.grouping, fit.k, fit.ordered_fraction) == ("local", 1, 1.0)


# --- bug 4: a loser equal to a winner at the same position: no element-wise threshold tells them apart --------------

def test_a_tie_between_a_winner_and_a_loser_at_one_position_is_competition() -> None:
    x = torch.tensor([[2.0, 1.0], [2.0, 3.0]])
    out = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # top-1 per sample: position 0 keeps 2 in one, drops 2 in the other
    assert competing_fraction(x, out) == (0.5, 1)  # before: (0.0, 0)
    evidence = detect_layers(nn.Sequential(TopK(1)), x).finding("0").evidence
    assert (evidence["competing_fraction"], evidence["competing_positions"]) == (0.5, 1)
    strictly = torch.tensor([[2.0, 1.0], [1.5, 3.0]])
    assert competing_fraction(strictly, strictly * (strictly >= 2)) == (0.0, 0)  # x >= 2 everywhere: no crossing
    # a third position where both samples keep their unit holds no loser: not counted among the positions
    wide = torch.tensor([[2.0, 1.0, 5.0], [2.0, 3.0, 6.0]])
    assert competing_fraction(wide, TopK(2)(wide)) == (0.5, 1)
    same = torch.tensor([[3.0, 1.0], [4.0, 2.0]])
    assert competing_fraction(same, TopK(1)(same)) == (0.0, 0)  # the same unit wins everywhere: no mixed position


# --- gates.py: what the groupings, the agreement and the fits read (mutants no other test told apart) ---------------

def test_candidate_groupings_and_group_rows_refuse_what_they_cannot_group() -> None:
    assert candidate_groupings(1) == () and candidate_groupings(2) == ("dense",)
    assert candidate_groupings(3) == ("whole-channel", "channel", "local", "volume")
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    rows = group_rows(x, "row")  # along the last dim (5), not the rows' count (4) nor the batch (2)
    assert rows.shape == (24, 5) and torch.equal(rows[1], x[0, 0, 1]) and torch.equal(ungroup_rows(rows, x, "row"), x)
    with pytest.raises(ValueError, match="grouping 'row' needs \\[N, C, \\.\\.\\.\\] inputs"):
        group_rows(torch.zeros(4, 6), "row")
    with pytest.raises(ValueError, match="'whole-channel' ranks channel statistics"):
        group_rows(x, "whole-channel")
    with pytest.raises(ValueError, match="unknown grouping 'rows'"):
        group_rows(x, "rows")


def test_a_row_gate_on_maps_wider_than_tall_is_read_per_row() -> None:
    h = torch.randn(4, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    out = h * (h >= h.topk(2).values[..., -1:]).to(h.dtype)
    fit = infer_grouping(h, out)
    assert fit is not None and (fit.grouping, fit.group_size, fit.groups, fit.k) == ("row", 6, 48, 2)


def test_mask_agreement_of_other_shapes_is_zero_and_of_one_element_is_read() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert mask_agreement(x, torch.tensor([[1.0], [0.0]])) == 0.0  # broadcastable, but not x's shape
    assert mask_agreement(torch.tensor([[2.0]]), torch.tensor([[2.0]])) == 1.0
    assert mask_agreement(torch.tensor([[2.0]]), torch.tensor([[3.0]])) == 0.0


def test_an_output_agreeing_with_its_input_or_zero_in_999_of_1000_elements_is_read() -> None:
    x = torch.randn(10, 100, generator=torch.Generator().manual_seed(2))
    out = x * (x >= x.topk(10, dim=1).values[:, -1:]).to(x.dtype)
    winners = out.nonzero()
    out[tuple(winners[0])] *= 1.5  # one element in 1,000 neither its input nor 0 (MIN_MASK_AGREEMENT's slack)
    assert mask_agreement(x, out) == MIN_MASK_AGREEMENT
    fit = infer_grouping(x, out)
    assert fit is not None and (fit.grouping, fit.k) == ("dense", 10)
    out[tuple(winners[1])] *= 1.5  # two: not x · mask
    assert infer_grouping(x, out) is None


def test_a_layer_keeping_everything_in_most_samples_has_no_constant_count() -> None:
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(3))
    out = x.clone()
    out[0, x[0].argmin()] = 0.0  # one sample drops one unit; nine keep all six
    fit = gate_fit(x, out, "dense")
    assert (fit.k, fit.k_constant_fraction, fit.constant_k) == (6, 0.9, False)  # k = N: nothing selected
    assert infer_grouping(x, out) is None


def test_winners_whose_input_is_zero_are_invisible_and_only_zeros_can_be() -> None:
    """After a ReLU, a sample with fewer positive units than k keeps zeros too, which its output cannot show: its
    count interval reaches up over its zero losers (when its largest loser is 0). A negative loser would show."""
    x = torch.relu(torch.randn(5, 8, generator=torch.Generator().manual_seed(4)))
    x[0] = 0.0
    x[0, 0] = 2.0  # one positive unit: the top-3 keeps it and two zeros
    out = TopK(3)(x)
    fit = gate_fit(x, out, "dense")
    assert (fit.k, fit.k_min, fit.k_constant_fraction) == (3, 1, 1.0)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(5))
    out = TopK(3)(x)
    x[0] = torch.tensor([3.0, 0.0, -1.0, -2.0, -3.0, -4.0])
    out[0] = torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # a top-3 would show -1: this row is consistent with 1 or 2
    fit = gate_fit(x, out, "dense")
    assert (fit.k, fit.k_constant_fraction) == (3, 0.8)


def test_a_winner_tied_with_a_loser_is_still_ordered() -> None:
    x = torch.tensor([[3.0, 2.0, 2.0, 1.0], [4.0, 3.0, 1.0, 1.0]])
    out = torch.tensor([[3.0, 2.0, 0.0, 0.0], [4.0, 3.0, 0.0, 0.0]])  # the first of two tied units wins
    fit = gate_fit(x, out, "dense")
    assert (fit.k, fit.ordered_fraction, fit.magnitude_ordered_fraction) == (2, 1.0, 1.0)


def test_selection_score_bars_and_its_two_argument_form() -> None:
    assert selection_score(0.5, 0.95) == "magnitude"  # no smallest-value ordering measured (records before it)
    assert selection_score(0.0, 0.0, 0.9) == "smallest" and selection_score(0.0, 0.9) == "magnitude"
    assert selection_score(0.0, 0.89, 0.89) == "value"


def test_outputs_that_are_not_a_masking_of_the_input_are_no_gate() -> None:
    g = torch.Generator().manual_seed(6)
    xi = torch.randint(-5, 6, (6, 8), generator=g)
    assert infer_grouping(xi, xi * (xi > 2)) is None  # integer tensors
    x = torch.randn(6, 8, generator=g)
    assert infer_grouping(x, 2 * TopK(3)(x)) is None  # something zeroed, the rest scaled
    r = torch.relu(x)
    r[:, 0] = 0.0  # every sample has a zero
    assert infer_grouping(r, r.clone()) is None  # an identity after a ReLU zeroes nothing


def test_the_finest_grouping_whose_winners_are_ordered_at_the_bar_is_read_before_the_blocks() -> None:
    """Each sample keeps positions 0 and 2 of ``[4, 1, 3, 2]``-like rows: a dense top-2 and an LWTA of blocks of 2
    alike. One sample in ten keeps position 3 instead of 2: dense orders 9 of 10 samples (the bar, exactly), the
    blocks 19 of 20; the dense reading, first and at the bar, is kept."""
    x = torch.tensor([4.0, 1.0, 3.0, 2.0]) + torch.arange(10.0)[:, None] / 100
    out = x * torch.tensor([1.0, 0.0, 1.0, 0.0])
    out[9] = x[9] * torch.tensor([1.0, 0.0, 0.0, 1.0])
    fit = infer_grouping(x, out)
    assert fit is not None and (fit.grouping, fit.ordered_fraction) == ("dense", MAGNITUDE_ORDERED_FRACTION)
    assert gate_fit(x, out, "block-2").ordered_fraction == 0.95


# --- detect.py: the probe's tests, its reading of calls and its record ----------------------------------------------

def test_one_sample_of_two_units_is_enough_to_find_a_gate() -> None:
    found = detect_layers(nn.Sequential(TopK(1)), torch.tensor([[0.3, 0.8]]))
    assert [(f.name, f.kinds, f.grouping) for f in found.layers] == [("0", ["gate"], "dense")]


def test_a_batch_without_spread_shows_no_gate() -> None:
    """Identical constant inputs: no position competes and no shift by the input's std (0) tells the count of a
    gate from an element-wise threshold's."""
    assert detect_layers(nn.Sequential(DenseTopK(2)), torch.ones(4, 6)).layers == []


def test_an_element_wise_threshold_whose_count_survives_only_the_upward_shift_is_no_gate() -> None:
    """Three units always just above 0, five far below: shifted up by the input's std (about 0.5) the same three
    pass, shifted down none does. Both shifts are tried, at any scale of the input."""
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))).eval()
    with torch.no_grad():
        model[0].weight.mul_(0.01)
        model[0].bias.copy_(torch.tensor([0.05] * 3 + [-1.0] * 5))
    assert detect_layers(model, torch.rand(16, 4, generator=torch.Generator().manual_seed(0))).layers == []


class Flicker(nn.Module):
    """Its input, but for one element that is ``delta`` at odd calls and 0 at even ones."""

    def __init__(self, delta: float) -> None:
        super().__init__()
        self.delta, self.calls = delta, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        out = x.clone()
        out[0, 1] = self.delta * (self.calls % 2)
        return out


def test_calls_differing_by_more_than_the_relative_tolerance_are_randomized() -> None:
    """Two calls differing by 1e-5 of the largest output (exactly 1.0 here, in float64) are the same call; by a
    little more, randomized."""
    x = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.9
    x[0, 0] = 1.0
    assert detect_layers(nn.Sequential(Flicker(1e-5)), x).layers == []
    finding = detect_layers(nn.Sequential(Flicker(1.001e-5)), x).finding("0")
    assert finding is not None and finding.kinds == ["randomized"]
    assert finding.evidence["max_call_difference"] == 1.001e-5 and finding.evidence["max_abs_output"] == 1.0


class Round(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * 4) / 4


def test_a_rounding_on_a_constant_input_is_piecewise_constant() -> None:
    """No spread to scale the perturbations by: they fall back to 1 (or the input's largest magnitude)."""
    finding = detect_layers(nn.Sequential(Round()), torch.zeros(8, 6)).finding("0")
    assert finding is not None and finding.kinds == ["piecewise-constant"]
    assert finding.evidence["perturbation_std_fraction"] == 0.1


def test_perturbations_are_scaled_by_the_inputs_spread_not_its_magnitude() -> None:
    """A step at 0 on inputs of std 1e-4: perturbations of up to 10 % of that std flip a few percent of these 2,048
    signs; a scale of 1 (the fallback of an input without spread) would flip about half of them at once."""
    from test_bpda_any_module import Step

    x = 1e-4 * torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    evidence = detect_layers(nn.Sequential(Step()), x).finding("0").evidence
    assert evidence["input_gradient"] == "zero" and evidence["changed_output_fraction"] < 0.25


class Positives(nn.Module):
    """The positive elements of its input, rounded: an output whose length follows the input."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x[x > 0] * 4) / 4


def test_an_output_whose_shape_follows_the_input_changed_whole() -> None:
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(1))
    x[:, :3] = 0.0  # zeros that the smallest perturbation makes positive or negative
    evidence = detect_layers(nn.Sequential(Positives()), x).finding("0").evidence
    assert (evidence["input_gradient"], evidence["perturbation_std_fraction"], evidence["changed_output_fraction"]) \
        == ("zero", 1e-3, 1.0)


class Saturated(nn.Module):
    """A clamp to [0, 1] called on inputs above 1 (saturated: no gradient) and, with ``inside``, again on inputs
    inside [0, 1]."""

    def __init__(self, inside: bool) -> None:
        super().__init__()
        self.inside, self.clamp, self.head = inside, nn.Hardtanh(0.0, 1.0), nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        saturated = self.clamp(2 * x + 1.0001)
        return self.head(saturated + self.clamp(x) if self.inside else saturated)


def test_a_clamp_saturated_at_one_call_is_not_piecewise_constant() -> None:
    x = torch.rand(64, 6, generator=torch.Generator().manual_seed(2))
    alone = detect_layers(seeded(lambda: Saturated(inside=False)).eval(), x)
    assert [(f.name, f.kinds) for f in alone.layers] == [("clamp", ["piecewise-constant"])]
    found = detect_layers(seeded(lambda: Saturated(inside=True)).eval(), x)
    assert found.layers == [] and found.probed == 2


class Constant(nn.Module):
    """A learned output that ignores its input (a learned query, a bias map)."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.linspace(0.1, 0.6, 6))

    def forward(self, x: Tensor) -> Tensor:
        return self.value.expand_as(x) * 1.0


def test_a_module_ignoring_its_input_is_probed_without_error() -> None:
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 6), Constant(), nn.Linear(6, 2))).eval()
    assert detect_layers(model, torch.rand(8, 4)).layers == []


def test_an_empty_output_is_probed_without_error() -> None:
    """A branch of width 0 (a channel split at a ratio that leaves none): before, the probe's ``max()`` of the two
    calls' difference raised on the empty tensor and stopped the evaluation."""
    class Split(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.empty, self.head = Empty(), nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(x) + self.empty(x).sum()

    class Empty(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x[:, :0]

    found = detect_layers(seeded(Split).eval(), torch.rand(3, 4))
    assert found.layers == [] and found.probed == 2


class Tokens(nn.Module):
    """Integer inputs (an embedding), a tuple output (an LSTM), a two-argument module (bilinear)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.lstm = nn.Embedding(10, 4), nn.LSTM(4, 4, batch_first=True)
        self.pair, self.head = nn.Bilinear(4, 4, 4), nn.Linear(4, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        states, _ = self.lstm(self.embed(tokens))
        return self.head(self.pair(states[:, -1], states[:, 0]))


def test_only_modules_of_one_floating_point_tensor_in_and_out_are_probed() -> None:
    found = detect_layers(seeded(Tokens).eval(), torch.randint(0, 10, (4, 5), generator=torch.Generator()))
    assert found.layers == [] and found.probed == 1  # the head alone


class WithUnused(nn.Module):
    """A gate inside a container of its own, and one of our kWTA layers the forward never calls."""

    def __init__(self) -> None:
        from kwta_robust.layers import KWTA

        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 12), nn.Sequential(TopK(3)), nn.Linear(12, 2))
        self.unused = KWTA(ratio=0.25)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def test_containers_are_not_probed_and_unused_bpda_capable_modules_are_acted_on() -> None:
    model = seeded(WithUnused).eval()
    found = detect_layers(model, torch.rand(8, 6, generator=torch.Generator().manual_seed(3)))
    assert [(f.name, f.kinds) for f in found.layers] == [("body.1.0", ["gate"])] and found.probed == 3
    assert found.bpda_capable == ["unused"] and list(found.auto_targets()) == ["body.1.0", "unused"]
    assert found.auto_targets()["unused"] == LayerTarget()
    assert 0 < found.wall_time_s < 600


def test_an_output_holding_the_inputs_elements_in_another_shape_is_read_in_the_inputs() -> None:
    x = torch.rand(4, 1)
    assert as_input_shape(x, torch.ones(4)).shape == (4, 1)  # [N, 1] squeezed to [N]
    assert as_input_shape(torch.rand(2, 3, 2, 2), torch.ones(2, 12)).shape == (2, 3, 2, 2)
    assert as_input_shape(x, torch.ones(2, 2)).shape == (2, 2)  # another batch: not the input's elements
    assert as_input_shape(torch.rand(4), torch.ones(())).shape == ()


def test_records_without_the_newer_fields_read_as_nothing_found() -> None:
    empty = Detection.from_dict(None)
    assert (empty.n, empty.probed, empty.layers, empty.wall_time_s) == (0, 0, [], 0.0)
    old = Detection.from_dict({"layers": [{"name": "g", "module_class": "TopK", "kinds": ["gate"]}]})
    assert old.layers[0].native is False and old.target("g") == LayerTarget("gate")
