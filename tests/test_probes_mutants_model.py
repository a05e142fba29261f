"""Mutation round on :mod:`kwta_robust.model_probes`: every number ``measure_model`` returns, on tiny models whose
gradients, outputs and batch dependence are worked out by hand (values exact in binary floating point)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kwta_robust.diagnostics_base import Thresholds
from kwta_robust.model_probes import measure_model

W = torch.tensor([[1.0, 2.0], [3.0, -1.0]])  # two classes on two features: W[0] - W[1] = [-2, 3], L1 norm 5


class SqrtLinear(nn.Module):
    """``sqrt(x) @ W.T``: the margin's input gradient is ±(W[1] - W[0]) / (2 sqrt(x)) — L1 norm 5 at x = 1/4,
    2.5 at x = 1, infinite where an entry is 0."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sqrt() @ W.T


class Saturating(nn.Module):
    """``100 * relu(x - 1/2)`` summed, as ``[s, -s]``: zero gradient below 1/2; at x = 1 the logits are ±100 and
    float32's softmax is exactly one-hot (exp(-200) underflows), so cross-entropy's gradient is exactly zero."""

    def forward(self, x: Tensor) -> Tensor:
        s = 100 * torch.relu(x - 0.5).sum(dim=1, keepdim=True)
        return torch.cat([s, -s], dim=1)


class Half(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.half()


class Counting(nn.Module):
    """``base`` plus the number of the call at entry [0, 0] (the gradient pass is call 1, the two compared forward
    passes calls 2 and 3): outputs that change by exactly 1 between the two passes."""

    def __init__(self, base: list[list[float]]) -> None:
        super().__init__()
        self.base, self.calls = torch.tensor(base), 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        out = self.base[: len(x)].clone()
        out[0, 0] += self.calls
        return out + 0 * x.flatten(1).sum(dim=1, keepdim=True)


class Fixed(nn.Module):
    """The same rows for every input (the outputs' form tests)."""

    def __init__(self, rows: list[list[float]]) -> None:
        super().__init__()
        self.rows = torch.tensor(rows)

    def forward(self, x: Tensor) -> Tensor:
        return self.rows + 0 * x.flatten(1).sum(dim=1, keepdim=True)


class BatchMin(nn.Module):
    """``[x_i - 7/4 * min over the batch, 0]``: each sample's logits depend on the rest of its batch."""

    def forward(self, x: Tensor) -> Tensor:
        col = x - 1.75 * x.min()
        return torch.cat([col, torch.zeros_like(col)], dim=1)


class Cut(nn.Module):
    """Logits computed without a graph (the input gradient is missing)."""

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return x.flatten(1) @ W.T


def test_gradient_fractions_and_the_mean_l1_over_the_finite_samples() -> None:
    x = torch.tensor([[0.25, 0.25], [0.0, 0.25], [1.0, 1.0]])  # L1 norms 5, infinite, 2.5
    probes = measure_model(SqrtLinear(), x, torch.tensor([0, 1, 0]))
    assert probes["n"] == 3 and probes["grad_zero_fraction"] == 0.0
    assert probes["grad_nonfinite_fraction"] == 1 / 3
    assert probes["mean_grad_l1"] == 3.75  # (5 + 2.5) / 2: the infinite sample left out
    assert probes["grad_missing"] is False and probes["grad_cut"] is None
    assert probes["output_dtype"] == "float32" and probes["low_precision_ce_grad_zero_fraction"] is None


def test_a_saturated_softmax_is_counted_only_where_the_margin_gradient_is_not_zero() -> None:
    x = torch.tensor([[0.1, 0.1], [1.0, 1.0]])  # below 1/2: every gradient zero; at 1: only cross-entropy's
    probes = measure_model(Saturating(), x, torch.tensor([0, 0]))
    assert probes["grad_zero_fraction"] == 0.5 and probes["ce_grad_zero_fraction"] == 0.5
    assert probes["mean_grad_l1"] == 200.0  # (0 + 2 * 200) / 2: d(s - (-s))/dx_j = 200 on each of two entries
    half = measure_model(nn.Sequential(Saturating(), Half()), x, torch.tensor([0, 0]))
    assert half["output_dtype"] == "float16" and half["grad_zero_fraction"] == 0.5
    assert half["ce_grad_zero_fraction"] == 0.5 and half["low_precision_ce_grad_zero_fraction"] == 0.5


def test_two_forward_passes_that_differ() -> None:
    probes = measure_model(Counting([[-0.5, 2.0], [-8.0, 0.0]]), torch.zeros(2, 3), torch.tensor([1, 1]))
    # first pass: [[1.5, 2], [-8, 0]]; second: [[2.5, 2], [-8, 0]] — sample 0's prediction changes from 1 to 0
    assert probes["max_output_diff"] == 1.0 and probes["max_abs_output"] == 8.0
    assert probes["prediction_changes"] == 1
    assert probes["batch_half"] is None and probes["batch_max_output_diff"] is None  # randomized: not compared


def test_a_difference_at_exactly_the_tolerance_is_repeatable() -> None:
    """``randomized`` flags a difference beyond ``output_rtol`` times the largest output; one of exactly that much
    is not randomized, so the batch halves are compared."""
    model = Counting([[-4.0, 1.0], [0.5, -1.0]])  # first pass [[-2, 1], [0.5, -1]]: largest |output| 2, diff 1
    probes = measure_model(model, torch.zeros(2, 3), torch.tensor([1, 0]), Thresholds(output_rtol=0.5))
    assert probes["max_output_diff"] == 1.0 and probes["max_abs_output"] == 2.0
    assert probes["batch_half"] == 1  # the half (call 4): [[0, 1]] against [[-2, 1]]
    assert probes["batch_max_output_diff"] == 2.0 and probes["batch_prediction_changes"] == 0


def test_the_first_half_of_an_odd_batch_alone() -> None:
    x = torch.tensor([[2.0], [3.0], [1.0], [1.0], [1.0]])
    probes = measure_model(BatchMin(), x, torch.tensor([0, 0, 1, 1, 1]))
    # together (min 1): column 0 = x - 1.75 = [0.25, 1.25]; the first 5 // 2 = 2 alone (min 2): [-1.5, -0.5]
    assert probes["batch_half"] == 2 and probes["batch_prediction_changes"] == 2
    assert probes["batch_max_output_diff"] == 1.75 and probes["batch_statistics_layers"] == []
    assert probes["max_output_diff"] == 0.0
    one = measure_model(BatchMin(), x[:1], torch.tensor([0]))  # one sample: no half to compare
    assert one["n"] == 1 and one["batch_half"] is None and one["batch_prediction_changes"] is None


def test_an_empty_batch_has_no_missing_gradient_to_report() -> None:
    probes = measure_model(Cut(), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert probes["n"] == 0 and probes["grad_missing"] is False and probes["grad_cut"] is None
    assert measure_model(Cut(), torch.ones(2, 2), torch.tensor([0, 1]))["grad_missing"] is True


def test_which_rows_look_like_probabilities() -> None:
    thresholds = Thresholds(probability_atol=0.25)  # exact in binary: the bounds are -1/4, 5/4 and |sum - 1| <= 1/4
    cases = [  # rows, looks like probabilities, like hard labels, largest |row sum - 1|
        ([[0.25, 0.75], [1.0, 0.0]], True, False, 0.0),
        ([[0.0, 1.0], [1.0, 0.0]], True, True, 0.0),
        ([[1.5, -0.25]], False, False, 0.25),  # sum within the tolerance, an entry above 1 + 1/4
        ([[-0.5, 1.25, 0.25]], False, False, 0.0),  # sums to 1, an entry below -1/4, none above 5/4
        ([[0.5, 1.0]], False, False, 0.5),  # every entry in range, the sum 3/2
        ([[0.5, 0.5], [1.0, 0.5]], False, False, 0.5),  # one row of two sums to 3/2
        ([[1.0, 1.0], [1.0, 0.0]], False, False, 1.0),  # zeros and ones that are no one-hot rows
    ]
    for rows, prob, hard, err in cases:
        probes = measure_model(Fixed(rows), torch.zeros(len(rows), 2), torch.zeros(len(rows), dtype=torch.long),
                               thresholds)
        assert (probes["outputs_look_like_probabilities"], probes["outputs_look_like_hard_labels"],
                probes["max_row_sum_error"]) == (prob, hard, err), rows


class ZeroThenTiny(nn.Module):
    """All-zero outputs, except 1e-20 at [0, 0] on the third call (the second compared forward pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        out = torch.zeros(len(x), 2) + 0 * x.flatten(1).sum(dim=1, keepdim=True)
        out[0, 0] += 1e-20 if self.calls == 3 else 0.0
        return out


def test_all_zero_outputs_are_compared_against_a_floor_not_zero() -> None:
    """Largest output 0: the tolerance is ``output_rtol`` times 1e-12 (as ``randomized`` reads it), so a difference
    of 1e-20 is no randomness, and the batch halves are compared."""
    probes = measure_model(ZeroThenTiny(), torch.zeros(2, 3), torch.tensor([0, 1]))
    assert probes["max_abs_output"] == 0.0 and 0 < probes["max_output_diff"] < 1e-5 * 1e-12
    assert probes["batch_half"] == 1 and probes["batch_max_output_diff"] == 0.0


def test_float16_probability_rows_are_summed_in_float32() -> None:
    """Ten float16 entries of 0.1 (each 1638/16384) sum to 16380/16384 = 1 - 2**-12 in float32; rounded to float16
    the sum would be 1 (half way between 2047/2048 and 1, ties to even) and its error lost."""
    model = Fixed([[0.1] * 10])
    model.rows = model.rows.half()
    probes = measure_model(model, torch.zeros(1, 2).half(), torch.zeros(1, dtype=torch.long))
    assert probes["output_dtype"] == "float16" and probes["max_row_sum_error"] == 2.0 ** -12
    assert probes["outputs_look_like_probabilities"] is True
