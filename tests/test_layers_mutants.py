"""Mutation round on the hard kWTA layer (Xiao et al., ICLR 2020): every expected value below is written out by hand
— the kept set of tiny tensors per mode, ``k`` for a given ratio and group size, ``k`` in eval mode, duty cycles over
two batches, the gradient of each backward mode — and every documented validation is a one-line error."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kwta_robust.layers import (
    KWTA,
    KWTA2d,
    ActivationSpec,
    apply_mask,
    group_size,
    k_from_ratio,
    kwta,
    kwta_threshold,
    winner_mask,
)

T = torch.tensor


# --- groups, k and the kept set --------------------------------------------------------------------------------------
def test_group_sizes_per_mode() -> None:
    assert group_size((2, 3, 4, 5), "dense") == 60 and group_size((2, 7), "dense") == 7
    assert group_size((2, 3, 4, 5), "volume") == 60
    assert group_size((2, 3, 4, 5), "channel") == 20
    assert group_size((2, 3, 4, 5), "local") == 3
    for shape in [(2, 3, 4), (2, 3, 4, 5, 6)]:
        with pytest.raises(ValueError, match=r"expects \[N, C, H, W\] inputs"):
            group_size(shape, "volume")


def test_k_from_ratio_by_hand() -> None:
    # max(1, floor(ratio * size)), capped at size
    assert [k_from_ratio(0.5, n) for n in (1, 2, 3, 4, 5)] == [1, 1, 1, 2, 2]
    assert k_from_ratio(0.7, 10) == 7 and k_from_ratio(0.99, 10) == 9 and k_from_ratio(0.01, 99) == 1
    assert k_from_ratio(1.0, 3) == 3
    assert k_from_ratio(2.0, 5) == 5  # documented cap (outside the layers' ratio range)


def test_dense_kept_set_written_out() -> None:
    x = T([[0.5, -1.0, 3.0, 2.0, 0.0],
           [-3.0, -2.0, -1.0, -4.0, -5.0]])
    # ratio 0.4 of 5 features: k = 2 per sample (negative winners keep their value)
    assert torch.equal(KWTA(ratio=0.4)(x), T([[0.0, 0.0, 3.0, 2.0, 0.0],
                                               [0.0, -2.0, -1.0, 0.0, 0.0]]))


def test_volume_channel_local_kept_sets_written_out() -> None:
    x = T([[[[1.0, 8.0], [3.0, 4.0]],
            [[5.0, 2.0], [7.0, 6.0]]]])  # [1, 2, 2, 2]
    # volume, k = 3 of 8: 8, 7, 6
    assert torch.equal(kwta(x, 3, "volume"), T([[[[0.0, 8.0], [0.0, 0.0]], [[0.0, 0.0], [7.0, 6.0]]]]))
    # channel, k = 2 of 4 per channel: {8, 4} and {7, 6}
    assert torch.equal(kwta(x, 2, "channel"), T([[[[0.0, 8.0], [0.0, 4.0]], [[0.0, 0.0], [7.0, 6.0]]]]))
    # local, k = 1 of 2 channels per location: 5 | 8 | 7 | 6
    assert torch.equal(kwta(x, 1, "local"), T([[[[0.0, 8.0], [0.0, 0.0]], [[5.0, 0.0], [7.0, 6.0]]]]))
    # KWTA2d: ratio 0.25 of the volume (8) is k = 2; of a channel (4) k = 1; of the channels (2) k = 1 (max(1, 0))
    assert torch.equal(KWTA2d(ratio=0.25)(x), T([[[[0.0, 8.0], [0.0, 0.0]], [[0.0, 0.0], [7.0, 0.0]]]]))
    assert torch.equal(KWTA2d(ratio=0.25, mode="channel")(x), T([[[[0.0, 8.0], [0.0, 0.0]], [[0.0, 0.0], [7.0, 0.0]]]]))
    assert torch.equal(KWTA2d(ratio=0.25, mode="local")(x), kwta(x, 1, "local"))


def test_ties_at_the_threshold_all_win_in_every_mode() -> None:
    x = T([[[[2.0, 2.0], [1.0, 2.0]]]])  # [1, 1, 2, 2]: the largest value ties three ways
    for mode in ("volume", "channel"):
        assert torch.equal(kwta(x, 1, mode), T([[[[2.0, 2.0], [0.0, 2.0]]]]))
        assert torch.equal(winner_mask(x, 2, mode), T([[[[1.0, 1.0], [0.0, 1.0]]]]))
    assert torch.equal(kwta(T([[1.0, 1.0, 1.0]]), 1, "dense"), T([[1.0, 1.0, 1.0]]))


def test_threshold_values_and_k_validation() -> None:
    x = T([[4.0, 1.0, 3.0, 2.0]])
    assert [kwta_threshold(x, k, "dense").item() for k in (1, 2, 3, 4, 9)] == [4.0, 3.0, 2.0, 1.0, 1.0]
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be >= 1"):
            kwta_threshold(x, k, "dense")


def test_winner_mask_dtype_follows_the_scores_by_default() -> None:
    x = T([[4.0, 1.0, 3.0]], dtype=torch.float64)
    mask = winner_mask(x, 2, "dense")
    assert mask.dtype == torch.float64 and torch.equal(mask, T([[1.0, 0.0, 1.0]], dtype=torch.float64))
    assert winner_mask(x, 2, "dense", torch.float32).dtype == torch.float32


def test_kwta_keeps_x_but_selects_on_scores_and_leaves_x_unchanged() -> None:
    x = T([[1.0, 2.0, 3.0]])
    scores = T([[3.0, 2.0, 1.0]])
    assert torch.equal(kwta(x, 1, "dense", scores), T([[1.0, 0.0, 0.0]]))
    before = x.clone()
    apply_mask(x, winner_mask(x, 1, "dense"))
    kwta(x, 1, "dense")
    KWTA(k=1)(x)
    assert torch.equal(x, before)  # only the mask's storage is reused


def test_float64_layer_output_keeps_float64() -> None:
    x = T([[1.0, 5.0, 3.0]], dtype=torch.float64)
    y = KWTA(k=2)(x)
    assert y.dtype == torch.float64 and torch.equal(y, T([[0.0, 5.0, 3.0]], dtype=torch.float64))


# --- layer configuration -------------------------------------------------------------------------------------------
def test_effective_k_caps_and_rounds_in_eval_mode() -> None:
    assert KWTA(k=10).effective_k(4) == 4 and KWTA(k=3).effective_k(4) == 3
    assert KWTA(ratio=1.0).effective_k(6) == 6
    # k_inference_factor: k = min(size, max(1, round(k * f))) in eval mode only (Python round: half to even)
    layer = KWTA(k=3, k_inference_factor=0.5)
    assert layer.effective_k(10, training=True) == 3
    assert layer.effective_k(10, training=False) == 2  # round(1.5)
    assert KWTA(k=5, k_inference_factor=0.5).effective_k(10, training=False) == 2  # round(2.5)
    assert KWTA(k=7, k_inference_factor=0.5).effective_k(10, training=False) == 4  # round(3.5)
    assert KWTA(k=1, k_inference_factor=0.25).effective_k(10, training=False) == 1  # at least one winner
    assert KWTA(k=4, k_inference_factor=3.0).effective_k(10, training=False) == 10  # capped at the group
    layer = KWTA(k=3, k_inference_factor=0.5).eval()
    assert layer.effective_k(10) == 2 and layer.train().effective_k(10) == 3
    x = T([[5.0, 4.0, 3.0, 2.0, 1.0]])
    assert torch.equal(KWTA(k=3, k_inference_factor=0.5).eval()(x), T([[5.0, 4.0, 0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 2.5}, "k must be an integer >= 1"),
    ({"k": 0}, "k must be an integer >= 1"),
    ({"k": float("inf")}, "k must be an integer >= 1, got inf"),
    ({"k": float("nan")}, "k must be an integer >= 1, got nan"),
    ({"ratio": 1.01}, "ratio must be in"),
    ({"ratio": -0.1}, "ratio must be in"),
    ({"ratio": float("nan")}, "ratio must be in"),
    ({}, "exactly one"),
    ({"ratio": 0.1, "boost_strength": -0.5, "num_units": 3}, "boost_strength must be >= 0"),
    ({"ratio": 0.1, "boost_strength": 0.5}, "boosting needs num_units"),
    ({"ratio": 0.1, "k_inference_factor": -1.0}, "k_inference_factor must be > 0"),
    ({"ratio": 0.1, "duty_cycle_period": 0}, "duty_cycle_period must be >= 1"),
    ({"ratio": 0.1, "temperature": 0.0}, "temperature must be > 0"),
    ({"ratio": 0.1, "backward": "straight"}, "backward must be one of exact, identity, smooth"),
    ({"ratio": 0.1, "backward": 3}, "backward must be a name or a callable"),
])
def test_bad_layer_settings_are_one_line_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KWTA(**kwargs)


def test_ratio_one_and_integral_float_k_are_accepted() -> None:
    layer = KWTA(ratio=1.0)
    assert layer.ratio == 1.0 and layer.k is None
    x = T([[1.0, -2.0, 3.0]])
    assert torch.equal(layer(x), x)
    layer.k = 2.0
    assert layer.k == 2 and isinstance(layer.k, int) and layer.ratio is None
    assert torch.equal(layer(x), T([[1.0, 0.0, 3.0]]))


def test_shape_and_mode_checks() -> None:
    with pytest.raises(ValueError, match=r"KWTA expects a batch \[N, F\]"):
        KWTA(k=1)(torch.ones(3))
    with pytest.raises(ValueError, match=r"KWTA2d expects \[N, C, H, W\]"):
        KWTA2d(k=1)(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="KWTA2d mode must be one of volume, channel, local"):
        KWTA2d(k=1, mode="dense")


def test_defaults() -> None:
    layer = KWTA2d(k=1)
    assert layer.mode == "volume" and layer.backward == "exact" and layer.temperature == 1.0
    assert layer.duty_cycle is None and dict(layer.named_buffers()) == {}
    assert KWTA2d(k=1, num_units=4).duty_cycle is None  # no boosting, no duty-cycle buffers
    spec = ActivationSpec()
    assert spec.name == "relu" and spec.mode == "volume" and spec.boost_strength == 0.0
    assert ActivationSpec("kwta", ratio=0.1).spatial(4).mode == "volume"


def test_describe_and_repr() -> None:
    layer = KWTA2d(ratio=0.2, mode="local", boost_strength=0.5, num_units=3, k_inference_factor=1.5)
    assert layer.describe() == {"mode": "local", "ratio": 0.2, "k": None, "boost_strength": 0.5,
                                "k_inference_factor": 1.5}
    assert KWTA(k=4).describe()["k"] == 4 and KWTA(k=4).describe()["ratio"] is None
    assert repr(KWTA(k=4)) == "KWTA(mode=dense, k=4, backward=exact)"
    assert repr(KWTA2d(ratio=0.5, backward="smooth")) == "KWTA2d(mode=volume, ratio=0.5, backward=smooth)"
    assert "backward=custom" in repr(KWTA(k=1, backward=torch.tanh))


def test_apply_mask_reuses_the_mask_storage_only_without_a_graph() -> None:
    x, mask = T([[1.0, 2.0, 3.0]]), T([[1.0, 0.0, 1.0]])
    out = apply_mask(x, mask)
    assert out.data_ptr() == mask.data_ptr() and torch.equal(out, T([[1.0, 0.0, 3.0]]))
    xg, mask = T([[1.0, 2.0, 3.0]], requires_grad=True), T([[1.0, 0.0, 1.0]])
    with torch.no_grad():
        out = apply_mask(xg, mask)
    assert out.data_ptr() == mask.data_ptr() and not out.requires_grad
    mask = T([[1.0, 0.0, 1.0]])
    out = apply_mask(xg, mask)
    assert out.data_ptr() != mask.data_ptr() and torch.equal(mask, T([[1.0, 0.0, 1.0]]))
    out.sum().backward()
    assert torch.equal(xg.grad, T([[1.0, 0.0, 1.0]]))


# --- backward passes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backward, expected", [
    ("exact", [0.0, 1.0, 0.0, 1.0]),  # the winner mask (k = 2: 3.0 and 2.0)
    ("identity", [1.0, 1.0, 1.0, 1.0]),  # straight through
    (lambda x: x * x, [2.0, 6.0, -2.0, 4.0]),  # a callable surrogate: d(x^2)/dx = 2x
])
def test_backward_gradients_written_out(backward, expected: list[float]) -> None:
    x = T([[1.0, 3.0, -1.0, 2.0]], requires_grad=True)
    y = KWTA(k=2, backward=backward)(x)
    assert torch.equal(y.detach(), T([[0.0, 3.0, 0.0, 2.0]]))  # the forward is exact whatever the backward
    y.sum().backward()
    assert torch.equal(x.grad, T([expected]))


def test_set_backward_switches_and_keeps_temperature_unless_given() -> None:
    layer = KWTA(k=1, temperature=0.5)
    assert layer.temperature == 0.5
    layer.set_backward("identity")
    assert layer.backward == "identity" and layer.temperature == 0.5
    layer.set_backward("smooth", 0.25)
    assert layer.backward == "smooth" and layer.temperature == 0.25


# --- boosting -----------------------------------------------------------------------------------------------------
def test_duty_cycles_over_three_batches_by_hand() -> None:
    layer = KWTA(k=1, boost_strength=1e-3, num_units=2, duty_cycle_period=4).train()
    layer(T([[2.0, 0.0], [2.0, 0.0]]))  # seen 2, period max(2, min(4, 2)) = 2: (0 * 0 + [2, 0]) / 2
    assert torch.allclose(layer.duty_cycle, T([1.0, 0.0])) and int(layer.learning_iterations) == 2
    layer(T([[0.0, 2.0], [0.0, 2.0]]))  # seen 4, period 4: ([1, 0] * 2 + [0, 2]) / 4
    assert torch.allclose(layer.duty_cycle, T([0.5, 0.5])) and int(layer.learning_iterations) == 4
    layer(T([[0.0, 2.0]]))  # seen 5, period min(4, 5) = 4: ([0.5, 0.5] * 3 + [0, 1]) / 4
    assert torch.allclose(layer.duty_cycle, T([0.375, 0.625])) and int(layer.learning_iterations) == 5


def test_channel_duty_cycle_is_the_fraction_of_locations_won() -> None:
    layer = KWTA2d(k=1, mode="channel", boost_strength=1e-3, num_units=2).train()
    x = T([[[[1.0, 2.0, 3.0]], [[5.0, 4.0, 6.0]]]])  # [1, 2, 1, 3]: one winner of 3 locations per channel
    assert torch.equal(layer(x), T([[[[0.0, 0.0, 3.0]], [[0.0, 0.0, 6.0]]]]))
    assert torch.allclose(layer.duty_cycle, T([1 / 3, 1 / 3]))


def test_boosted_surrogate_and_gradient_follow_the_boosted_winners() -> None:
    layer = KWTA(k=1, boost_strength=10.0, num_units=3).eval()
    layer.duty_cycle.copy_(T([1.0, 0.0, 0.0]))  # scores: x * exp(10 (1/3 - duty)): 1 * e^-6.7 < 0.9 * e^3.3
    x = T([[1.0, 0.9, 0.1]], requires_grad=True)
    assert torch.equal(layer.surrogate(x).detach(), T([[0.0, 0.9, 0.0]]))
    layer(x).sum().backward()
    assert torch.equal(x.grad, T([[0.0, 1.0, 0.0]]))
    assert torch.equal(layer.duty_cycle, T([1.0, 0.0, 0.0]))  # eval mode: no update


# --- ActivationSpec -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"name": "gelu"}, "unknown activation 'gelu'"),
    ({"name": "kwta", "ratio": 1.5}, r"k_ratio must be in \(0, 1\]"),
    ({"name": "kwta", "ratio": 0.0}, r"k_ratio must be in \(0, 1\]"),
    ({"name": "kwta", "ratio": 0.1, "k": 2}, "exactly one of k_ratio"),
    ({"name": "kwta", "ratio": 0.1, "mode": "dense"}, "kwta mode must be one of volume, channel, local"),
])
def test_bad_activation_specs_fail_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ActivationSpec(**kwargs)


def test_activation_spec_passes_every_setting_to_its_layers() -> None:
    spec = ActivationSpec("kwta", k=3, mode="local", boost_strength=0.5, k_inference_factor=2.0)
    for layer, units, mode in [(spec.dense(6), 6, "dense"), (spec.spatial(4), 4, "local")]:
        assert (layer.k, layer.ratio, layer.mode, layer.num_units) == (3, None, mode, units)
        assert (layer.boost_strength, layer.k_inference_factor) == (0.5, 2.0)
        assert layer.duty_cycle.shape == (units,)
    ratio = ActivationSpec("kwta", ratio=0.5)
    assert (ratio.dense(4).ratio, ratio.dense(4).k, ratio.dense(4).duty_cycle) == (0.5, None, None)
    assert math.isclose(ratio.spatial(2).ratio, 0.5) and ratio.spatial(2).boost_strength == 0.0
    assert isinstance(ActivationSpec().dense(3), nn.ReLU)
    assert ActivationSpec.from_dict({"name": "kwta", "k": 2}).to_dict()["k"] == 2


def test_kwta_output_keeps_the_dtype_of_x_not_of_the_scores() -> None:
    x, scores = T([[1.0, 2.0, 3.0]]), T([[3.0, 2.0, 1.0]], dtype=torch.float64)
    y = kwta(x, 2, "dense", scores)
    assert y.dtype == torch.float32 and torch.equal(y, T([[1.0, 2.0, 0.0]]))


def test_exact_layer_gradient_takes_the_channels_last_layout_of_its_mask() -> None:
    x = torch.arange(8.0).view(1, 2, 2, 2).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = KWTA2d(k=3)(x)  # volume k = 3: 7, 6, 5
    assert torch.equal(y.detach(), T([[[[0.0, 0.0], [0.0, 0.0]], [[0.0, 5.0], [6.0, 7.0]]]]))
    (y.flatten(1) * torch.arange(1.0, 9.0)).sum().backward()  # the gradient arrives NCHW through the flatten
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x.grad, T([[[[0.0, 0.0], [0.0, 0.0]], [[0.0, 6.0], [7.0, 8.0]]]]))
