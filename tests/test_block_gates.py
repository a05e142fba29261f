"""Local winner-takes-all (LWTA, Srivastava et al. 2013): blocks of ``U`` adjacent units, only each block's largest
passes. The layer probe reads it as a ``"block-<U>"`` gate (k = 1 per block) and BPDA's smooth surrogate relaxes
each block on its own threshold; before, its constant count per sample (F/U) made it a ``"dense"`` top-F/U gate
whose winners are not its largest values (ordered_fraction 0), relaxed on one threshold no block uses."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.gates import (block_groupings, block_size, gate_fit, group_rows, infer_grouping, relaxed_gate,
                          ungroup_rows)
from bpda_helpers import assert_bpda_matches_relaxed
from kwta_robust.detect import detect_layers


class LWTA(nn.Module):
    """Blocks of ``u`` consecutive units along dim 1 (per location): the block's largest passes, the rest are 0."""

    def __init__(self, u: int) -> None:
        super().__init__()
        self.u = u

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        rows = x.reshape(shape[0], shape[1], -1).transpose(1, 2).reshape(-1, self.u)
        keep = torch.zeros_like(rows).scatter(1, rows.argmax(dim=1, keepdim=True), 1.0)
        kept = (rows * keep).reshape(shape[0], -1, shape[1]).transpose(1, 2)
        return kept.reshape(shape)


def mlp() -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(12, 16), LWTA(2), nn.Linear(16, 8), LWTA(4), nn.Linear(8, 3)).eval()


X = torch.rand(32, 12, generator=torch.Generator().manual_seed(1))


def test_block_rows_round_trip_and_candidates() -> None:
    x = torch.randn(3, 6, 2, 2, generator=torch.Generator().manual_seed(0))
    rows = group_rows(x, "block-3")
    assert rows.shape == (3 * 4 * 2, 3) and torch.equal(rows[0], x[0, :3, 0, 0])
    assert torch.equal(ungroup_rows(rows, x, "block-3"), x)
    assert block_groupings((5, 12)) == ("block-2", "block-3", "block-4", "block-6")
    assert block_groupings((5, 7)) == ()


def test_lwta_is_read_as_blocks_and_top_k_gates_as_before() -> None:
    h = torch.randn(16, 24, generator=torch.Generator().manual_seed(2))
    fit = infer_grouping(h, LWTA(4)(h))
    assert fit is not None and (fit.grouping, fit.k, fit.ordered_fraction) == ("block-4", 1, 1.0)
    assert gate_fit(h, LWTA(4)(h), "dense").ordered_fraction < 0.5  # what the dense reading saw
    top = h * (h >= h.topk(6, dim=1).values[:, -1:])
    assert infer_grouping(h, top).grouping == "dense"  # a top-k gate: read as before
    conv = torch.randn(4, 6, 3, 3, generator=torch.Generator().manual_seed(3))
    assert infer_grouping(conv, LWTA(2)(conv)).grouping == "block-2"  # adjacent channels at each location


def test_bpda_relaxes_each_block_on_its_own_threshold() -> None:
    model = mlp()
    detection = detect_layers(model, X)
    targets = detection.auto_targets()
    assert (targets["1"].describe(), targets["3"].describe()) == ("gate/block-2", "gate/block-4")
    assert detection.finding("3").evidence["k"] == 1

    def relaxed(t: Tensor) -> Tensor:
        h = model[0](t)
        hard = model[1](h.detach())
        soft = relaxed_gate(h, hard, "block-2", 0.1)
        return model[4](model[3](model[2](soft + (hard - soft).detach())))

    assert_bpda_matches_relaxed(model, {"1": targets["1"]}, "1", X, relaxed)
    # each block's loser gets a gradient (the sample's spread scales the sigmoid, not the block's own gap)
    h = model[0](X).detach().requires_grad_(True)
    relaxed_gate(h, model[1](h.detach()), "block-2", 0.1).sum().backward()
    losers = model[1](h.detach()) == 0
    assert float((h.grad[losers].abs() > 1e-4).float().mean()) > 0.5


def test_block_size_reads_only_ascii_digits_of_at_least_two() -> None:
    assert [block_size(g) for g in ("block-2", "block-16", "block-1", "block-", "block-x", "block-²", "dense")] == [
        2, 16, None, None, None, None, None]  # "²".isdigit() is true, and int("²") raises


def test_blocks_need_two_of_them_and_a_width_they_divide() -> None:
    assert block_groupings((5,)) == () and block_groupings((4, 2)) == () and block_groupings((4, 4)) == ("block-2",)
    for t in (torch.zeros(4, 5), torch.zeros(4)):
        with pytest.raises(ValueError, match="grouping 'block-2' needs dim 1 a multiple of 2"):
            group_rows(t, "block-2")


def test_a_block_relaxation_scales_each_sample_by_its_own_std() -> None:
    """Per block of 2: ``sigmoid((x - t) / (T · std))`` with ``t`` the block's midpoint and ``std`` the population
    std of the sample's units (3 samples of 4 units: not the width's)."""
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    rows = x.reshape(6, 2)
    spread = x.std(dim=1, correction=0).repeat_interleave(2)[:, None]
    expected = torch.sigmoid((rows - rows.mean(dim=1, keepdim=True)) / (0.5 * spread)).reshape(3, 4)
    torch.testing.assert_close(relaxed_gate(x, LWTA(2)(x), "block-2", 0.5, mask=True), expected)
