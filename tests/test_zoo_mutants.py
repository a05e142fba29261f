"""Mutation round on the nupic.torch-style zoo (``kwta_robust.zoo.nupic_layers`` and ``kwta_robust.zoo.nupic``):
every expected value here is worked out by hand from nupic.torch's definitions (Ahmad & Scheinkman 2019;
``k = round(n · percent_on)``, eval ``int(k · k_inference_factor)`` for ``KWinners``, winners on
``x · exp(-β · duty_cycle)``, ``duty ← (duty · (period − B) + active) / period`` with
``period = min(duty_cycle_period, samples seen)``, ``round((1 − sparsity) · fan_in)`` non-zero weights) and the
defaults of nupic.torch's ``MNISTSparseCNN`` / ``GSCSparseCNN``, never read off this package's output."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.errors import ConfigError
from kwta_robust.models import create_model
from kwta_robust.zoo import nupic_gsc_sparse_cnn, nupic_sparse_cnn
from kwta_robust.zoo.nupic_layers import (KWinners, KWinners2d, SparseWeights, SparseWeights2d, rezero_weights,
                                          update_boost_strength)


def _no_boost(**kwargs) -> dict:
    return {"boost_strength": 0.0, "k_inference_factor": 1.0, **kwargs}


# --- KWinners: k rules, masks written out by hand --------------------------------------------------------------------


def test_k_is_rounded_and_the_inference_k_truncated() -> None:
    layer = KWinners(n=10, percent_on=0.29, k_inference_factor=1.3, boost_strength=0.0)
    assert (layer.k, layer.k_inference) == (3, 3)  # round(2.9) = 3; int(3 · 1.3 = 3.9) = 3
    x = torch.tensor([[0.5, -1.0, 2.0, 0.1, 3.0, -0.2, 1.0, 0.0, 0.7, 0.3]])
    expected = [[0.0, 0.0, 2.0, 0.0, 3.0, 0.0, 1.0, 0.0, 0.0, 0.0]]  # the three largest: 3, 2, 1
    assert layer.train()(x).tolist() == expected
    assert layer.eval()(x).tolist() == expected


def test_zero_winners_give_zeros_instead_of_failing() -> None:
    dense = KWinners(n=4, percent_on=0.1, **_no_boost())  # round(0.4) = 0
    assert dense.k == 0 and dense.eval()(torch.ones(2, 4)).tolist() == [[0.0] * 4] * 2
    local = KWinners2d(channels=4, percent_on=0.1, local=True, **_no_boost()).eval()  # round(4 · 0.1) = 0
    assert torch.equal(local(torch.ones(1, 4, 2, 2)), torch.zeros(1, 4, 2, 2))


def test_break_ties_with_relu_drops_negative_winners() -> None:
    x = torch.tensor([[1.0, -2.0, -3.0, -0.5, -4.0]])  # k = round(5 · 0.4) = 2: the winners are 1.0 and -0.5
    strict = KWinners(n=5, percent_on=0.4, break_ties=True, **_no_boost()).eval()
    assert strict(x).tolist() == [[1.0, 0.0, 0.0, -0.5, 0.0]]
    relu = KWinners(n=5, percent_on=0.4, break_ties=True, relu=True, **_no_boost()).eval()
    assert relu(x).tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]]
    maps = torch.tensor([[1.0, -2.0, -3.0, -0.5]]).view(1, 4, 1, 1)  # local over 4 channels, k = round(4 · 0.5) = 2
    layer = KWinners2d(channels=4, percent_on=0.5, local=True, break_ties=True, relu=True, **_no_boost()).eval()
    assert layer(maps).flatten().tolist() == [1.0, 0.0, 0.0, 0.0]


def test_boosted_scores_pick_the_winner_and_outputs_stay_unboosted() -> None:
    layer = KWinners(n=3, percent_on=0.34, boost_strength=1.0, k_inference_factor=1.0).eval()  # k = round(1.02) = 1
    layer.duty_cycle.copy_(torch.tensor([0.5, 0.0, 0.0]))
    x = torch.tensor([[1.5, 1.0, 0.2]])
    # the paper's boost factors exp((target − dc) · β), target = k / n = 1/3: unit 0 scores 1.5 · e^(-1/6) ≈ 1.27,
    # unit 1 scores 1.0 · e^(1/3) ≈ 1.40, so unit 1 wins and keeps its raw value
    target = 1 / 3
    factors = [math.exp((target - dc) * 1.0) for dc in (0.5, 0.0, 0.0)]
    assert max(range(3), key=lambda i: x[0, i].item() * factors[i]) == 1
    assert layer(x).tolist() == [[0.0, 1.0, 0.0]]
    unboosted = KWinners(n=3, percent_on=0.34, boost_strength=0.0, k_inference_factor=1.0).eval()
    unboosted.duty_cycle.copy_(torch.tensor([0.5, 0.0, 0.0]))
    assert unboosted(x).tolist() == [[1.5, 0.0, 0.0]]


# --- in place or not --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, shape, winners", [
    (lambda inplace: KWinners(n=8, percent_on=0.25, inplace=inplace, **_no_boost()), (1, 8), [7.0, 8.0]),
    (lambda inplace: KWinners2d(channels=2, percent_on=0.25, inplace=inplace, **_no_boost()), (1, 2, 2, 2),
     [7.0, 8.0]),  # global: k = round(8 · 0.25) = 2
    (lambda inplace: KWinners2d(channels=2, percent_on=0.5, local=True, inplace=inplace, **_no_boost()),
     (1, 2, 2, 2), [5.0, 6.0, 7.0, 8.0]),  # local: k = 1 of 2 channels per position; channel 1 holds 5..8
], ids=["dense", "global", "local"])
def test_inplace_flag_decides_whether_the_input_is_overwritten(make, shape, winners) -> None:
    original = torch.arange(1.0, 9.0).view(shape)
    plain_in = original.clone()
    out = make(False).eval()(plain_in)
    assert torch.equal(plain_in, original)  # not in place: the input is left alone
    assert out[out != 0].tolist() == winners
    inplace_in = original.clone()
    out_inplace = make(True).eval()(inplace_in)
    assert torch.equal(inplace_in, out) and torch.equal(out_inplace, out)


# --- duty cycles ------------------------------------------------------------------------------------------------------


def test_dense_duty_cycle_counts_only_positive_winners() -> None:
    layer = KWinners(n=4, percent_on=0.25, duty_cycle_period=5, **_no_boost()).train()
    layer(torch.tensor([[-1.0, -2.0, -3.0, -4.0]]))  # the winner -1.0 is not "active" (> 0)
    assert layer.duty_cycle.tolist() == [0.0, 0.0, 0.0, 0.0]
    layer(torch.tensor([[3.0, 1.0, 0.0, 0.0]]))  # period min(5, 2) = 2: (0 · 1 + [1, 0, 0, 0]) / 2
    assert layer.duty_cycle.tolist() == [0.5, 0.0, 0.0, 0.0]
    pair = torch.tensor([[0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 5.0, 1.0]])
    layer(pair)  # period min(5, 4) = 4: ([0.5, 0, 0, 0] · (4 − 2) + [0, 0, 2, 0]) / 4
    assert layer.duty_cycle.tolist() == [0.25, 0.0, 0.5, 0.0]
    layer(pair)  # period min(5, 6) = 5: ([0.25, 0, 0.5, 0] · (5 − 2) + [0, 0, 2, 0]) / 5
    assert layer.duty_cycle.tolist() == pytest.approx([0.15, 0.0, 0.7, 0.0])


def test_2d_duty_cycle_is_the_mean_activity_per_position() -> None:
    layer = KWinners2d(channels=2, percent_on=0.25, duty_cycle_period=10, **_no_boost()).train()  # k = round(2) = 2
    s0 = torch.tensor([[[4.0, 3.0], [0.1, 0.2]], [[0.3, 0.4], [0.5, 0.6]]])  # winners 4, 3: both in channel 0
    s1 = torch.tensor([[[0.1, 0.2], [0.3, 0.45]], [[2.0, 0.05], [0.06, 0.07]]])  # winners 2.0 (ch 1), 0.45 (ch 0)
    layer(torch.stack([s0, s1]))
    # active per channel over batch and positions: [3, 1], / (H·W = 4) = [0.75, 0.25]; period min(10, 2) = 2
    assert layer.duty_cycle.flatten().tolist() == pytest.approx([0.375, 0.125])
    layer(s0.unsqueeze(0))  # period 3: ([0.375, 0.125] · 2 + [2/4, 0]) / 3
    expected = [(0.75 + 0.5) / 3, 0.25 / 3]
    assert layer.duty_cycle.flatten().tolist() == pytest.approx(expected)
    layer(-torch.ones(1, 2, 2, 2) - torch.arange(8.0).view(1, 2, 2, 2))  # negative winners are not active
    expected = [e * 3 / 4 for e in expected]  # period 4: (dc · 3 + 0) / 4
    assert layer.duty_cycle.flatten().tolist() == pytest.approx(expected)
    layer.eval()(torch.rand(3, 2, 2, 2))
    assert layer.duty_cycle.flatten().tolist() == pytest.approx(expected) and layer.learning_iterations == 4


# --- settings, validation, description, decay ---------------------------------------------------------------------


def test_settings_are_validated_as_nupic_torch_asserts_them() -> None:
    with pytest.raises(ValueError, match="boost_strength must be >= 0"):
        KWinners(n=10, percent_on=0.1, boost_strength=-0.5)
    for factor in (1.5, -0.1):
        with pytest.raises(ValueError, match="boost_strength_factor"):
            KWinners(n=10, percent_on=0.1, boost_strength_factor=factor)
    assert KWinners(n=10, percent_on=0.1, boost_strength_factor=1.0).boost_strength_factor == 1.0
    with pytest.raises(ValueError, match="percent_on"):
        KWinners(n=10, percent_on=1.0, k_inference_factor=0.5)
    with pytest.raises(ValueError, match="sparsity"):
        SparseWeights(nn.Linear(4, 2), sparsity=1.0)


def test_an_eval_mode_k_above_n_is_refused_when_built() -> None:
    """n = 2, percent_on 0.3: k = round(0.6) = 1, eval k = int(1 · 3.0) = 3 > 2 although percent_on ·
    k_inference_factor = 0.9 < 1 (nupic.torch builds it and its first eval forward fails inside kthvalue)."""
    with pytest.raises(ValueError, match=r"3 eval-mode winners of n = 2"):
        KWinners(n=2, percent_on=0.3, k_inference_factor=3.0)
    assert KWinners(n=2, percent_on=0.3, k_inference_factor=2.0, boost_strength=0.0).k_inference == 2
    with pytest.raises(ConfigError, match="k_inference_factor"):
        nupic_sparse_cnn(cnn_out_channels=(2, 3), linear_units=2, linear_percent_on=0.3, k_inference_factor=3.0)


def test_describe_reports_the_training_ratio_and_settings() -> None:
    layer = KWinners(n=10, percent_on=0.2, k_inference_factor=1.5, boost_strength=0.7)
    assert layer.describe() == {"mode": "dense", "ratio": 0.2, "k": None, "boost_strength": 0.7,
                                "k_inference_factor": 1.5, "implementation": "nupic.torch KWinners"}
    local = KWinners2d(channels=4, percent_on=0.25, local=True, k_inference_factor=2.0)
    assert local.describe()["mode"] == "local" and local.describe()["k_inference_factor"] == 2.0


def test_apply_helpers_reach_2d_gates_and_sparse_convolutions() -> None:
    model = nn.Sequential(SparseWeights2d(nn.Conv2d(1, 2, 3), sparsity=0.5, seed=3),
                          KWinners2d(channels=2, percent_on=0.25, boost_strength=1.0, boost_strength_factor=0.5))
    model.apply(update_boost_strength)
    assert model[1]._cached_boost_strength == 0.5 and float(model[1].boost_strength) == 0.5
    with torch.no_grad():
        model[0].module.weight.fill_(1.0)
    model.apply(rezero_weights)
    zeros = 2 * (9 - 4)  # two output channels, fan-in 9, round(0.5 · 9 = 4.5) = 4 kept
    assert int((model[0].module.weight == 0).sum()) == int(model[0].zero_mask.sum()) == zeros


# --- sparse weights ------------------------------------------------------------------------------------------------


def test_sparse_weights_keep_round_of_the_dense_fraction() -> None:
    conv = SparseWeights2d(nn.Conv2d(1, 3, 5), sparsity=0.7, seed=0)  # fan-in 25: round(0.3 · 25 = 7.5000…01) = 8
    assert (conv.zero_mask.view(3, -1) == 0).sum(1).tolist() == [8, 8, 8]
    linear = SparseWeights(nn.Linear(10, 4), sparsity=0.75, seed=0)  # round(2.5) = 2 (half to even)
    assert (linear.zero_mask == 0).sum(1).tolist() == [2, 2, 2, 2]
    assert linear.weight is linear.module.weight and linear.bias is linear.module.bias
    assert SparseWeights(nn.Linear(10, 4, bias=False), sparsity=0.5).bias is None


# --- networks ------------------------------------------------------------------------------------------------------


def _kw(h: Tensor, duty: Tensor, beta: float, k: int) -> Tensor:
    """Global k-winners of each sample by sorting (ties kept)."""
    boosted = (h * torch.exp(-beta * duty)).reshape(h.shape[0], -1)
    kth = boosted.sort(dim=1, descending=True).values[:, k - 1 : k]
    return torch.where(boosted >= kth, h.reshape(h.shape[0], -1), torch.zeros(())).view_as(h)


def test_mnist_network_pools_before_its_k_winners() -> None:
    model = nupic_sparse_cnn(cnn_out_channels=(4, 6), linear_units=20, mean=None, std=None, seed=5)
    g = torch.Generator().manual_seed(6)
    for name in ("cnn1_kwinner", "cnn2_kwinner", "linear_kwinner"):
        getattr(model, name).duty_cycle.copy_(torch.rand(getattr(model, name).duty_cycle.shape, generator=g) * 0.4)
    x = torch.rand(3, 1, 28, 28, generator=g)
    s = model.state_dict()
    beta = 1.5
    h = F.max_pool2d(F.conv2d(x, s["cnn1.module.weight"], s["cnn1.module.bias"]), 2)  # 4 × 12 × 12
    h = _kw(h, s["cnn1_kwinner.duty_cycle"], beta, round(4 * 144 * 0.1))
    h = F.max_pool2d(F.conv2d(h, s["cnn2.module.weight"], s["cnn2.module.bias"]), 2)  # 6 × 4 × 4
    h = _kw(h, s["cnn2_kwinner.duty_cycle"], beta, round(6 * 16 * 0.2))
    h = F.linear(h.flatten(1), s["linear.module.weight"], s["linear.module.bias"])
    h = _kw(h, s["linear_kwinner.duty_cycle"], beta, 4)  # round(20 · 0.2), k_inference_factor 1
    expected = F.log_softmax(F.linear(h, s["output.weight"], s["output.bias"]), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), expected, rtol=1e-5, atol=1e-6)


def test_input_size_sets_the_linear_width_and_its_minimum() -> None:
    for size, side in ((16, 1), (30, 4), (32, 5)):  # (((s - 4) // 2) - 4) // 2
        model = nupic_sparse_cnn(cnn_out_channels=(2, 3), linear_units=10, input_size=size)
        assert model.linear.module.in_features == side * side * 3
        assert model.eval()(torch.rand(1, 1, size, size)).shape == (1, 10)
    with pytest.raises(ConfigError, match="too small"):
        nupic_sparse_cnn(input_size=15)


def test_default_networks_have_nupic_torchs_settings() -> None:
    mnist = nupic_sparse_cnn()
    gates = [mnist.cnn1_kwinner, mnist.cnn2_kwinner, mnist.linear_kwinner]
    assert [g.percent_on for g in gates] == [0.1, 0.2, 0.2]
    assert all(g._cached_boost_strength == 1.5 and g.boost_strength_factor == 0.85 and g.k_inference_factor == 1.0
               and g.duty_cycle_period == 1000 for g in gates)
    assert not mnist.cnn1_kwinner.local and not mnist.cnn2_kwinner.local
    # non-zero weights per output unit: round(0.6 · 25) = 15, round(0.45 · 800) = 360, round(0.2 · 1024) = 205
    nonzero = [int((m.zero_mask.flatten(1) == 0).sum(1).unique()) for m in (mnist.cnn1, mnist.cnn2, mnist.linear)]
    assert nonzero == [15, 360, 205]
    assert mnist.normalize.mean.flatten().tolist() == pytest.approx([0.1307])
    assert mnist.normalize.std.flatten().tolist() == pytest.approx([0.3081])
    gsc = nupic_gsc_sparse_cnn()
    gates = [gsc.cnn1_kwinner, gsc.cnn2_kwinner, gsc.linear_kwinner]
    assert [g.percent_on for g in gates] == [0.095, 0.125, 0.1]
    assert all(g._cached_boost_strength == 1.5 and g.boost_strength_factor == 0.9 and g.k_inference_factor == 1.0
               for g in gates)
    # round(0.5 · 25) = 12 (half to even), round(0.2 · 1600) = 320, round(0.1 · 1600) = 160
    nonzero = [int((m.zero_mask.flatten(1) == 0).sum(1).unique()) for m in (gsc.cnn1, gsc.cnn2, gsc.linear)]
    assert nonzero == [12, 320, 160]
    assert not hasattr(gsc, "normalize")


def test_settings_reach_every_gate_and_dense_convolutions_stay_plain() -> None:
    model = nupic_sparse_cnn(cnn_out_channels=(2, 3), linear_units=10, duty_cycle_period=50, kwinner_local=True)
    gates = [model.cnn1_kwinner, model.cnn2_kwinner, model.linear_kwinner]
    assert [g.duty_cycle_period for g in gates] == [50, 50, 50] and model.cnn2_kwinner.local
    gsc = nupic_gsc_sparse_cnn(cnn_out_channels=(4, 4), linear_units=10, cnn_sparsity=(0.0, 0.8))
    assert type(gsc.cnn1) is nn.Conv2d and "cnn1.weight" in gsc.state_dict() and "cnn2.zero_mask" in gsc.state_dict()
    assert bool((gsc.cnn1.weight != 0).all())


def test_seed_draws_every_weight_mask() -> None:
    a, b, again = (nupic_sparse_cnn(cnn_out_channels=(4, 6), linear_units=20, seed=s) for s in (0, 1, 0))
    for name in ("cnn1", "cnn2", "linear"):
        assert not torch.equal(getattr(a, name).zero_mask, getattr(b, name).zero_mask)
        assert torch.equal(getattr(a, name).zero_mask, getattr(again, name).zero_mask)


def test_registry_entries_take_the_activation_settings() -> None:
    model = create_model("nupic-sparse-cnn", {"name": "kwta", "ratio": 0.1, "k_inference_factor": 1.5,
                                              "boost_strength": 0.5}, cnn_out_channels=(2, 3), linear_units=10)
    gates = [model.cnn1_kwinner, model.cnn2_kwinner, model.linear_kwinner]
    assert all(g.k_inference_factor == 1.5 and g.percent_on == 0.1 and g.boost_strength_factor == 0.85
               and g._cached_boost_strength == 0.5 for g in gates)
    assert model.linear_kwinner.k_inference == 1  # int(round(10 · 0.1) · 1.5)
    with pytest.raises(ConfigError, match="no nupic counterpart"):
        create_model("nupic-sparse-cnn", {"name": "kwta", "ratio": 0.1, "mode": "channel"})
