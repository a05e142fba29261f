"""A ``>=`` top-k gate on a quantized score that keeps every unit of some groups (attacks/tied_gates.py).

``f = relu(h)``, ``q = round(2f) / 2``, ``t`` the median of ``q`` over the 4 channels at each location and
``f · (q >= t)``: where every ``q`` of a location ties at ``t`` the gate keeps all 4 channels (no loser), and the
count varies (1 to 4 non-zero winners) by ties of ``q`` that ``f`` does not show. ``tied_fit`` rejected every group
with no loser and read only the ties of the score itself, so BPDA read no gate on an attack step and refused the
model mid-attack, under ``bpda_layers: auto`` too (the wild-model fuzzer's seeds 517 and 1380,
tests/fuzz46_wild.py). The gate now reads by the ties of the tensor the selection ranked (``q``), ``k = 2``, and its
relaxation keeps a group with no loser whole in its hard limit; an element-wise threshold still reads as no gate.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import fuzz46_wild as wild
from attacks.gates import read_gate, relaxed_gate
from attacks.tied_gates import tied_fit, tied_operand
from kwta_robust.api import evaluate_model

CONFIG = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}], "bpda_layers": ["auto"],
          "attacks": [{"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}}],
          "noise": [], "diagnostics": {"enabled": False}}


def quantized(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(f, q, mask, out)`` of the gate above on seeded ``h`` ``[6, 8, 8, 4]`` (channels last, as the fuzzer's
    per-location gate ranks them); ``mask`` float 0/1."""
    h = 0.3 * torch.randn(6, 8, 8, 4, generator=torch.Generator().manual_seed(seed))
    f = torch.relu(h)
    q = torch.round(f * 2) / 2
    mask = (q >= torch.quantile(q, 0.5, dim=-1, keepdim=True)).float()
    return f, q, mask, f * mask


@pytest.mark.parametrize("screened", [False, True])
def test_a_gate_keeping_whole_groups_reads_by_the_ties_of_the_ranked_score(screened: bool) -> None:
    """Groups with no loser, counts that vary and no plain reading: the ties of ``q`` read it, ``k = 2``."""
    f, q, mask, out = quantized()
    counts = (out != 0).sum(dim=-1)
    assert bool((counts == 4).any()) and int(counts.min()) < 2 < int(counts.max())
    assert read_gate(f, out, known_gate=True) is None
    found = tied_operand(out, [f, mask], [q], screened=screened)
    assert found is not None
    x, shaped, (fit, is_mask) = found
    assert x is f and not is_mask and torch.equal(shaped, out)
    assert (fit.grouping, fit.score, fit.k, fit.group_size, fit.k_max) == ("row", "value", 2, 4, 4)
    hard_limit = relaxed_gate(f, out, fit.grouping, 1e-6, fit.score, mask=True)
    assert torch.equal(hard_limit > 0.5, out != 0)  # a group with no loser kept whole, ties included


def test_the_relaxation_of_a_group_with_no_loser_is_finite_and_keeps_it() -> None:
    """k = N: the threshold one std below the smallest winner; gradients finite, the smallest winner's about 1."""
    x = torch.tensor([[0.2, 0.4, 0.1, 0.3], [0.3, 0.1, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]]).view(1, 1, 3, 4)
    out = x.clone()
    out[0, 0, 1, 1:3] = 0
    x.requires_grad_(True)
    relaxed_gate(x, out, "row", 0.1).sum().backward()
    assert bool(torch.isfinite(x.grad).all())
    assert float(x.grad[0, 0, 0, 2]) > 0.99  # the smallest winner of the group that kept everything
    assert torch.equal(relaxed_gate(x.detach(), out, "row", 1e-6, mask=True)[0, 0, 0], torch.ones(4))


def test_no_element_wise_threshold_reads_as_a_gate_by_ranked_ties() -> None:
    """A ReLU, a fixed threshold, a constant ranked tensor, a group zeroed whole: no reading."""
    f, q, mask, out = quantized()
    h = 0.3 * torch.randn(6, 8, 8, 4, generator=torch.Generator().manual_seed(1))
    hq = torch.round(h * 2) / 2
    assert tied_fit(h, torch.relu(h), [hq]) is None
    assert tied_fit(f, f * (f > 0.3), [q]) is None
    assert tied_fit(h, h * (h.abs() > 0.3), [hq.abs()]) is None
    assert tied_fit(f, out, [torch.zeros_like(q)]) is None  # every unit tied: the losers' scores not below
    zeroed = out.clone()
    group = (f[..., :] != 0).all(dim=-1).nonzero()[0].tolist()
    zeroed[tuple(group)] = 0  # a group with non-zero inputs and no winner: no top-k keeps nothing
    assert tied_fit(f, zeroed, [q]) is None
    assert tied_fit(f, out, [q]) is not None


@pytest.mark.parametrize("seed", [517, 1380])
def test_bpda_reads_the_fuzzed_quantized_gate_on_every_step(seed: int) -> None:
    """Seeds 517 and 1380: BPDA smooth under ``auto`` refused mid-attack; now it relaxes ``a1`` on every step."""
    model, x, _, description = wild.build(seed)
    with torch.no_grad():
        y = model(x).argmax(1)
    record = evaluate_model(model, CONFIG, x, y, threads=1)
    assert [r.bpda_layers for r in record.results] == [{"a1": "wrapped inline"}], description
