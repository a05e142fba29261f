"""An LWTA over blocks of 2 channels on ReLU outputs (``v = relu(h).view(B, C / 2, 2, H, W)``,
``(v · (v == v.amax(2, keepdim=True))).view_as(r)``) on an input where no block has two non-zero units (found by the
wild-model fuzzer): on that call the gate zeroes only zeros, so no grouping reads it, and BPDA refused the whole
evaluation mid-attack ("ran a top-k selection in its forward but built no gate BPDA could read"), though that
call's mask cuts the gradient only where the input is exactly 0 (so did a top-k of ReLU outputs with fewer non-zero
units than ``k``, which keeps every unit). Now such a call runs as it is
(:func:`attacks.inline_gates._zeroes_nothing`); ``g[h < t] = 0`` is still refused (tests/test_unread_masked_inline.py).
Inputs ``[N, 1, 8, 8]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attacks.inline_gates import InlineGates
from kwta_robust.api import evaluate_model
from test_fuzz46_relu_lwta import PGD_AND_BPDA, ReluLwta

X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_a_call_whose_one_winner_gate_zeroes_only_zeros_is_counted_not_relaxed() -> None:
    h = torch.tensor([[1.0, -1.0, -2.0, 3.0], [-1.0, -2.0, 0.5, -0.5]]).view(2, 4, 1, 1).requires_grad_(True)
    with InlineGates(lambda: True, lambda x, o, s: o, "smooth", 0.5) as mode:
        out = ReluLwta()(h)
    assert torch.equal(out, torch.relu(h))
    assert (mode.selections, mode.relaxed, mode.zeroed_nothing()) == (1, 0, 1)


def test_a_top_k_of_relu_outputs_with_fewer_non_zero_units_than_k_is_counted_too() -> None:
    h = torch.tensor([[1.0, -1.0, 2.0, -3.0, 0.5, -1.0], [-1.0, 2.0, -2.0, -0.5, -1.0, 4.0]], requires_grad=True)
    with InlineGates(lambda: True, lambda x, o, s: o, "smooth", 0.5) as mode:
        r = torch.relu(h)
        out = r * (r >= r.topk(4, dim=1).values[:, -1:])  # the threshold is 0: every unit kept
    assert torch.equal(out, torch.relu(h))
    assert (mode.selections, mode.relaxed, mode.zeroed_nothing()) == (1, 0, 1)


def test_an_evaluation_runs_where_an_attack_step_meets_such_a_call() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), ReluLwta(), nn.Flatten(), nn.Linear(256, 3)).eval()
        with torch.no_grad():
            model[0].bias -= 0.2
    with torch.no_grad():
        y = model(X).argmax(1)
    record = evaluate_model(model, PGD_AND_BPDA, X, y, threads=1)
    result = record.result("bpda", "linf", 0.1)
    assert result.bpda_layers == {"1": "wrapped inline"} and result.n_attacked > 0
    assert record.worst("linf", 0.1).robust.accuracy <= min(r.robust.accuracy for r in record.results)


def test_a_window_max_gate_of_relu_outputs_with_one_non_zero_unit_per_window_is_counted_too() -> None:
    """``r · (r == F.max_pool2d(r, 3, 1, 1))`` where each 3 × 3 window holds one positive unit at most: on that call
    it zeroes only zeros, so no pool gate reads it; BPDA counts it (``zeroed_nothing``) and runs the call as it is,
    where before it refused the call as one that relaxed fewer gates than the probe counted."""
    h = torch.full((1, 1, 6, 6), -1.0)
    h[0, 0, 0, 0], h[0, 0, 4, 4] = 2.0, 3.0
    h.requires_grad_(True)
    with InlineGates(lambda: True, lambda x, o, s: o, "smooth", 0.5) as mode:
        r = torch.relu(h)
        out = r * (r == F.max_pool2d(r, 3, 1, 1))
    assert torch.equal(out, torch.relu(h))
    assert (mode.pools.noted, mode.relaxed, mode.zeroed_nothing()) == (1, 0, 1)
