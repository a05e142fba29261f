"""kWTA layers: winner selection against a brute-force reference, the ratio→k rule, ties, the pluggable backward
pass (checked against finite differences of ``layer.surrogate``), boosting, inference k and live ratio changes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from attacks.bpda_protocol import SupportsSurrogateBackward, surrogate_backward
from kwta_robust.layers import (
    KWTA,
    KWTA2d,
    ActivationSpec,
    k_from_ratio,
    kwta,
    kwta_layers,
    set_kwta_ratio,
    smooth_kwta,
    smooth_kwta_and_mask,
    winner_mask,
)
from kwta_robust.models import create_model
from kwta_robust.runtime import torch_threads


def brute_force_kwta(x: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    """Reference: for every group, sort its values in Python and keep entries >= the k-th largest."""
    out = torch.zeros_like(x)
    if mode in ("dense", "volume"):
        groups = [(n,) for n in range(x.shape[0])]
    elif mode == "channel":
        groups = list(itertools.product(range(x.shape[0]), range(x.shape[1])))
    else:  # local: (n, :, h, w)
        groups = [(n, slice(None), h, w) for n in range(x.shape[0]) for h in range(x.shape[2])
                  for w in range(x.shape[3])]
    for g in groups:
        values = x[g]
        ranked = sorted(values.flatten().tolist(), reverse=True)
        threshold = ranked[min(k, len(ranked)) - 1]  # k is capped at the group size
        out[g] = torch.where(values >= threshold, values, torch.zeros_like(values))
    return out


@pytest.mark.parametrize("mode", ["volume", "channel", "local"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_spatial_modes_match_brute_force(mode: str, k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(3, 5, 4, 4, generator=gen)
    expected = brute_force_kwta(x, k, mode)
    assert torch.equal(kwta(x, k, mode), expected)
    assert torch.equal(KWTA2d(k=k, mode=mode)(x), expected)


def test_dense_matches_brute_force_and_counts_winners() -> None:
    x = torch.randn(6, 20, generator=torch.Generator().manual_seed(0))
    layer = KWTA(ratio=0.25)
    y = layer(x)
    assert torch.equal(y, brute_force_kwta(x, 5, "dense"))
    assert ((y != 0).sum(dim=1) == 5).all()  # distinct random values: exactly k winners per sample


def test_dense_on_feature_maps_equals_volume_mode() -> None:
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(KWTA(k=6)(x), KWTA2d(k=6, mode="volume")(x))


def test_ratio_to_k_rule() -> None:
    assert k_from_ratio(0.1, 100) == 10
    assert k_from_ratio(0.1, 5) == 1  # floor(0.5) = 0 → at least one winner
    assert k_from_ratio(1.0, 7) == 7
    assert k_from_ratio(0.29, 100) == 29  # 0.29 * 100 = 28.999999999999996 in floats
    assert k_from_ratio(0.15, 10) == 1  # floor(1.5)
    layer = KWTA2d(ratio=0.1, mode="volume")
    x = torch.randn(4, 4, 5, 5, generator=torch.Generator().manual_seed(2))
    assert ((layer(x) != 0).flatten(1).sum(dim=1) == math.floor(0.1 * 100)).all()
    with pytest.raises(ValueError, match="ratio"):
        KWTA(ratio=0.0)
    with pytest.raises(ValueError, match="exactly one"):
        KWTA(ratio=0.1, k=3)


def test_ties_at_threshold_are_all_kept() -> None:
    x = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0, 0.5]])
    y = KWTA(k=2)(x)
    # threshold = 2nd largest = 2.0; every entry >= 2.0 wins, so 4 > k units stay active
    assert torch.equal(y, torch.tensor([[3.0, 2.0, 2.0, 2.0, 0.0, 0.0]]))
    fm = torch.zeros(1, 2, 2, 2)
    assert torch.equal(KWTA2d(k=1, mode="channel")(fm), fm)  # all-equal group: everything ties, nothing changes
    assert torch.equal(kwta(x, 2, "dense"), brute_force_kwta(x, 2, "dense"))


def _scaled_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.tanh(2.0 * x)


class _LearnedSurrogate(nn.Module):
    """A surrogate with a parameter, like a fitted BPDA approximation."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(x) * self.scale


def _numerical_vjp(f, x: torch.Tensor, w: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central finite differences of ``<f(x), w>`` with respect to every entry of ``x``."""
    grad = torch.zeros_like(x)
    flat, gflat = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + h
        plus = (f(x) * w).sum().item()
        flat[i] = old - h
        minus = (f(x) * w).sum().item()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


@pytest.mark.parametrize("backward", ["exact", "identity", "smooth", _scaled_tanh, "module"])
@pytest.mark.parametrize("layer_kind", ["dense", "volume", "channel", "local"])
def test_backward_modes_match_finite_differences_of_surrogate(backward, layer_kind: str) -> None:
    gen = torch.Generator().manual_seed(3)

    def make_layer():
        return KWTA(ratio=0.3) if layer_kind == "dense" else KWTA2d(ratio=0.3, mode=layer_kind)

    shape = (2, 10) if layer_kind == "dense" else (2, 3, 3, 3)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    layer = make_layer()
    layer.set_backward(_LearnedSurrogate() if backward == "module" else backward, temperature=0.5)
    xg = x.clone().requires_grad_(True)
    (layer(xg) * w).sum().backward()
    with torch.no_grad():
        numerical = _numerical_vjp(layer.surrogate, x.clone(), w)
    assert torch.allclose(xg.grad, numerical, atol=1e-6, rtol=1e-5)
    if backward != "exact":
        # The gradient really is the surrogate's, not the exact one (the winner mask times w).
        xe = x.clone().requires_grad_(True)
        (make_layer()(xe) * w).sum().backward()
        assert not torch.allclose(xg.grad, xe.grad)


def test_forward_identical_across_backward_modes() -> None:
    x = torch.randn(4, 6, 5, 5, generator=torch.Generator().manual_seed(4))
    layer = KWTA2d(ratio=0.2, mode="channel")
    reference = layer(x)
    for backward in ("identity", "smooth", _scaled_tanh, _LearnedSurrogate().float()):
        layer.set_backward(backward, temperature=0.1)
        assert torch.equal(layer(x.clone().requires_grad_(True)).detach(), reference)
    with pytest.raises(ValueError, match="backward"):
        layer.set_backward("nonsense")
    with pytest.raises(ValueError, match="temperature"):
        layer.set_backward("smooth", temperature=0.0)


@pytest.mark.parametrize("mode", ["dense", "volume", "channel", "local"])
@pytest.mark.parametrize("k", [1, 2, 5, 12, 27])
def test_mask_from_the_smooth_selection_equals_winner_mask(mode: str, k: int) -> None:
    """The BPDA-smooth forward takes the exact winner mask from the relaxation's sorted top-(k+1) values: the same
    bits as :func:`winner_mask` (its own selection) — with ties at the threshold, a NaN in one
    group (its threshold is NaN: nothing wins there), k = 1 and k >= the group size (27 units in volume mode,
    9 in channel mode: everything wins)."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn((4, 27) if mode == "dense" else (4, 3, 3, 3), generator=gen)
    x = torch.round(x * 2) / 2  # many ties, also at the threshold
    x.view(-1)[5] = float("nan")
    scores = x * 1.5 + 0.25  # winners chosen on other scores than the values (boosting)
    for s in (None, scores):
        _, mask = smooth_kwta_and_mask(x, k, mode, 0.3, s)
        assert torch.equal(mask, winner_mask(x if s is None else s, k, mode, x.dtype))
    if mode != "dense":  # channels-last feature maps: same bits
        cl = x.contiguous(memory_format=torch.channels_last)
        assert torch.equal(smooth_kwta_and_mask(cl, k, mode, 0.3)[1], winner_mask(x, k, mode))


def test_mask_from_the_smooth_selection_equals_the_sampled_bracket() -> None:
    """Wide groups on the CPU with one thread: winner_mask selects by NumPy's sampled bracket
    (:mod:`kwta_robust.selection`), the smooth path by torch's sorted top-k; same mask."""
    x = torch.randn(32, 8, 12, 12, generator=torch.Generator().manual_seed(13))
    with torch_threads(1):
        for k in (1, 115, 576, 1151):
            assert torch.equal(smooth_kwta_and_mask(x, k, "volume", 0.05)[1], winner_mask(x, k, "volume"))


def test_smooth_backward_forward_is_the_exact_output_bit_for_bit() -> None:
    """The layer's BPDA-smooth forward (one selection for mask and relaxation) returns the exact kWTA output, and its
    input gradient is the relaxation's, on a channels-last batch as the runner feeds it."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(5, 8, 6, 6, generator=gen).contiguous(memory_format=torch.channels_last)
    layer = KWTA2d(ratio=0.1, mode="volume")
    exact = layer(x)
    layer.set_backward("smooth", temperature=0.05)
    xg = x.clone().requires_grad_(True)
    out = layer(xg)
    assert torch.equal(out.detach(), exact)
    w = torch.randn(x.shape, generator=gen)
    (grad,) = torch.autograd.grad((out * w).sum(), xg)
    xs = x.clone().requires_grad_(True)
    (reference,) = torch.autograd.grad((smooth_kwta(xs, layer.effective_k(8 * 36), "volume", 0.05) * w).sum(), xs)
    assert torch.equal(grad, reference)


def test_smooth_relaxation_tends_to_exact_as_temperature_drops() -> None:
    x = torch.randn(3, 40, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact = kwta(x, 8, "dense")
    errors = [(smooth_kwta(x, 8, "dense", t) - exact).abs().max().item() for t in (1.0, 0.1, 0.01, 1e-6)]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 1e-9  # the gate sits between the k-th and (k+1)-th value, so even the k-th winner is kept
    assert torch.equal(smooth_kwta(x, 40, "dense", 1e-6), x)  # k = group size: everything wins


def test_module_surrogate_does_not_leak_into_state_dict() -> None:
    model = create_model("mlp", ActivationSpec("kwta", ratio=0.2), input_size=4, hidden=[8])
    keys = set(model.state_dict())
    n_params = len(list(model.parameters()))
    (layer,) = kwta_layers(model).values()
    layer.set_backward(_LearnedSurrogate().float())
    assert set(model.state_dict()) == keys
    assert len(list(model.parameters())) == n_params
    assert isinstance(layer, SupportsSurrogateBackward)


def test_bpda_context_manager_switches_and_restores() -> None:
    model = create_model("cnn", ActivationSpec("kwta", ratio=0.1), input_size=8)
    with surrogate_backward(model, "smooth", temperature=0.3) as switched:
        assert len(switched) == len(kwta_layers(model)) == 3
        assert all(layer.backward == "smooth" and layer.temperature == 0.3 for layer in switched.values())
    assert all(layer.backward == "exact" for layer in kwta_layers(model).values())


def test_boosting_duty_cycles_update_only_in_train_mode() -> None:
    layer = KWTA2d(ratio=0.25, mode="local", boost_strength=1.5, num_units=4, duty_cycle_period=100)
    x = torch.rand(8, 4, 3, 3, generator=torch.Generator().manual_seed(6))
    x[:, 0] += 1.0  # channel 0 always wins locally (k = 1 of 4 channels)
    layer.eval()
    layer(x)
    assert torch.equal(layer.duty_cycle, torch.zeros(4)) and int(layer.learning_iterations) == 0
    layer.train()
    layer(x)
    # first batch: duty cycle = fraction of (sample, location) pairs where each channel won
    assert torch.allclose(layer.duty_cycle, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert int(layer.learning_iterations) == 8
    before = layer.duty_cycle.clone()
    layer.eval()
    layer(x)
    assert torch.equal(layer.duty_cycle, before)
    assert set(layer.state_dict()) == {"duty_cycle", "learning_iterations"}


def test_boosting_changes_winners_towards_rarely_active_units() -> None:
    layer = KWTA(k=1, boost_strength=10.0, num_units=3)
    layer.duty_cycle.copy_(torch.tensor([1.0, 0.0, 0.0]))  # unit 0 has been active all the time
    x = torch.tensor([[1.0, 0.9, 0.1]])
    y = layer.eval()(x)
    assert torch.equal(y, torch.tensor([[0.0, 0.9, 0.0]]))  # the boosted runner-up wins; output keeps x's value


def test_duty_cycle_stays_a_fraction_when_batch_exceeds_period() -> None:
    layer = KWTA(k=1, boost_strength=1.0, num_units=4, duty_cycle_period=2)
    x = torch.tensor([[4.0, 1.0, 0.0, 0.0]]).repeat(6, 1)
    layer.train()(x)
    assert torch.allclose(layer.duty_cycle, torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_k_inference_factor_applies_in_eval_mode_only() -> None:
    layer = KWTA(ratio=0.1, k_inference_factor=2.0)
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(7))
    assert ((layer.train()(x) != 0).sum(dim=1) == 5).all()
    assert ((layer.eval()(x) != 0).sum(dim=1) == 10).all()
    assert layer.describe()["k_inference_factor"] == 2.0
    with pytest.raises(ValueError, match="k_inference_factor"):
        KWTA(ratio=0.1, k_inference_factor=0.0)


def test_ratio_change_on_a_live_model() -> None:
    model = create_model("cnn", ActivationSpec("kwta", ratio=0.2), input_size=8).eval()
    conv_act = next(iter(kwta_layers(model).values()))  # the first convolutional kWTA layer
    seen = []
    handle = conv_act.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    model(x)
    handle.remove()
    pre = seen[0]
    assert ((conv_act(pre) != 0).flatten(1).sum(1) == k_from_ratio(0.2, pre[0].numel())).all()
    assert set_kwta_ratio(model, 0.05) == 3
    assert all(layer.ratio == 0.05 for layer in kwta_layers(model).values())
    assert ((conv_act(pre) != 0).flatten(1).sum(1) == k_from_ratio(0.05, pre[0].numel())).all()
    assert model(x).shape == (2, 10)
    with pytest.raises(ValueError, match="ratio"):
        set_kwta_ratio(model, 1.5)


def test_activation_spec_builds_layers_and_round_trips() -> None:
    spec = ActivationSpec("kwta", ratio=0.1, mode="channel", boost_strength=0.5)
    assert isinstance(spec.dense(16), KWTA) and spec.dense(16).num_units == 16
    spatial = spec.spatial(8)
    assert isinstance(spatial, KWTA2d) and spatial.mode == "channel" and spatial.duty_cycle.shape == (8,)
    assert ActivationSpec.from_dict(spec.to_dict()) == spec
    assert isinstance(ActivationSpec().spatial(3), nn.ReLU)
    with pytest.raises(ValueError, match="k_ratio"):
        ActivationSpec("kwta")
