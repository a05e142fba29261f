"""Mutation round on the layer probe (kwta_robust/detect.py) and the gate readers (attacks/gates.py,
attacks/gate_factors.py): the bugs it found, and tests for mutants of comparisons, bars and conditions that no other
test told from the code."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attacks.gates import CONSTANT_K_FRACTION, MAGNITUDE_ORDERED_FRACTION, gate_fit, infer_grouping, true_fraction
from eval_helpers import make_record
from kwta_robust.detect import competing_fraction, detect_layers
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
    assert "gate" in found.auto_targets()
    record = make_record()
    record.detection = found.to_dict()
    assert layer_notes(record) == ["layer probe (16 inputs, 4 leaf modules): gate (TopK): top-k gate (dense, "
                                   "k=4/12, a gate at 1 of its 2 calls)"]


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
