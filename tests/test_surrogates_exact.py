"""Learned BPDA surrogates (attacks/surrogates.py) against independent computations: the rank features, the gate,
the collected activations, the fit's budget and reported error, and the distilled twin's inputs and state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from attacks import ThreatModel
from attacks.base import AttackConfigError
from attacks.surrogates import (
    DistillSettings,
    FitSettings,
    GradientSwapModel,
    GroupGateSurrogate,
    _group_stats,
    collect_layer_io,
    distill_model_twin,
    fit_layer_surrogate,
    fit_layer_surrogates,
    perturbed_copies,
    relative_mse,
)
from bpda_models import D, H, DenseTopK, batch, kwta_mlp
from test_adaptive import Recorder


class Rows(nn.Module):
    """Identity that records how many rows each call saw (a shape-preserving layer anyone may name)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, h: Tensor) -> Tensor:
        self.seen.append(len(h))
        return h


def kth_largest(values: Tensor, k: int) -> Tensor:
    return values.sort(descending=True).values[k - 1]


# --- rank features ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("density", "k"), [(0.25, 3), (0.2, 2), (0.21, 3), (0.5, 5), (0.01, 1), (1.0, 10)])
def test_group_threshold_is_the_ceil_density_th_largest_and_std_the_groups(density: float, k: int) -> None:
    h = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    thr, std = _group_stats(h, (1,), density)
    assert thr.shape == std.shape == (4, 1)
    for row in range(4):  # k = ceil(density · 10), by hand in the parametrisation
        assert float(thr[row, 0]) == float(kth_largest(h[row], k))
        assert float(std[row, 0]) == pytest.approx(float(h[row].std()))


def test_spatial_groups_are_per_channel_and_per_location() -> None:
    h = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    thr, std = _group_stats(h, (2, 3), 0.25)  # per channel, over the 20 locations: the 5th largest
    assert thr.shape == (2, 3, 1, 1)
    assert float(thr[1, 2, 0, 0]) == float(kth_largest(h[1, 2].flatten(), 5))
    assert float(std[1, 2, 0, 0]) == pytest.approx(float(h[1, 2].std()))
    thr, std = _group_stats(h, (1,), 0.5)  # per location, over the 3 channels: the 2nd largest
    assert thr.shape == (2, 1, 4, 5)
    assert float(thr[0, 0, 3, 1]) == float(kth_largest(h[0, :, 3, 1], 2))
    assert float(std[0, 0, 3, 1]) == pytest.approx(float(h[0, :, 3, 1].std()))


def test_degenerate_groups_have_a_positive_finite_std() -> None:
    _, std = _group_stats(torch.randn(3, 1), (1,), 0.5)  # one element per group: no spread, std 1
    assert torch.equal(std, torch.ones(3, 1))
    _, std = _group_stats(torch.full((2, 6), 0.7), (1,), 0.5)  # constant groups: the floor, not 0
    assert bool((std > 0).all()) and bool(torch.isfinite(std).all())


def test_surrogate_groupings_features_and_gate_by_hand() -> None:
    gen = torch.Generator().manual_seed(0)
    flat = GroupGateSurrogate(0.25, 2, 16, gen, "cpu", torch.float32)
    spatial = GroupGateSurrogate(0.25, 4, 16, gen, "cpu", torch.float32)
    assert flat.groups == [(1,)] and spatial.groups == [(1, 2, 3), (2, 3), (1,)]
    h4 = torch.randn(2, 3, 4, 4, generator=gen)
    _, scale4 = spatial.features(h4)  # the scale is per sample, over all of C, H, W
    assert torch.allclose(scale4, h4.flatten(1).std(dim=1)[:, None, None, None].expand_as(h4))
    h = torch.randn(3, 8, generator=gen)
    feats, scale = flat.features(h)
    row_std = h.std(dim=1, keepdim=True)
    thr = torch.stack([kth_largest(r, 2) for r in h])[:, None]  # ceil(0.25 · 8) = 2
    assert torch.allclose(feats[..., 0], h / row_std) and torch.allclose(feats[..., 1], (h - thr) / row_std)
    assert torch.allclose(scale, row_std.expand_as(h))
    with torch.no_grad():  # gate logit a and residual r constant: g(h) = h · sigmoid(a) + r · std_sample(h)
        flat.w2.zero_()
        flat.b2.copy_(torch.tensor([0.7, -0.3]))
    assert torch.allclose(flat(h), h * torch.sigmoid(torch.tensor(0.7)) - 0.3 * row_std)


def test_surrogate_initialisation_follows_nn_linear_scales() -> None:
    module = GroupGateSurrogate(0.5, 2, 64, torch.Generator().manual_seed(0), "cpu", torch.float32)
    for param, bound in ((module.w1, 1 / math.sqrt(2)), (module.b1, 1 / math.sqrt(2)), (module.w2, 1 / 8)):
        largest = float(param.detach().abs().max())
        assert 0.8 * bound < largest <= bound
    assert float(module.w1.detach().mean()) == pytest.approx(0.0, abs=0.15)


@pytest.mark.parametrize("density", [0.0, 1.5])
def test_surrogate_rejects_a_density_outside_0_1(density: float) -> None:
    with pytest.raises(ValueError, match="density"):
        GroupGateSurrogate(density, 2, 4, torch.Generator(), "cpu", torch.float32)


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 4, 5)])
def test_surrogate_rejects_inputs_of_another_rank(shape: tuple[int, ...]) -> None:
    module = GroupGateSurrogate(0.5, 2, 4, torch.Generator().manual_seed(0), "cpu", torch.float32)
    with pytest.raises(ValueError, match="2-D"):
        module(torch.randn(shape))


# --- collecting and fitting ----------------------------------------------------------------------------------


def test_perturbed_copies_are_the_batch_then_copies_inside_the_ball() -> None:
    x = torch.rand(5, D, generator=torch.Generator().manual_seed(0))
    threat = ThreatModel("linf", 0.1)
    data = perturbed_copies(x, threat, 3, torch.Generator().manual_seed(1))
    assert data.shape == (20, D) and torch.equal(data[:5], x)
    for copy in data[5:].split(5):
        assert bool(threat.contains(copy, x).all()) and not torch.equal(copy, x)


def test_collected_io_covers_every_chunk_and_rejects_odd_layers() -> None:
    model = kwta_mlp()
    x = torch.rand(300, D, generator=torch.Generator().manual_seed(0))
    layer_in, layer_out = collect_layer_io(model, ["1"], x, batch_size=128)["1"]
    with torch.no_grad():
        expected_in = model[0](x)
    assert torch.allclose(layer_in, expected_in) and torch.equal(layer_out, model[1](layer_in))
    with pytest.raises(AttackConfigError, match="one tensor"):
        collect_layer_io(nn.Sequential(nn.Linear(D, H), nn.LSTM(H, H)), ["1"], x[:, None, :].expand(300, 2, D))
    with pytest.raises(AttackConfigError, match="shape-preserving"):
        collect_layer_io(nn.Sequential(nn.Linear(D, H), nn.Linear(H, 5)), ["1"], x)


def test_relative_mse_by_hand() -> None:
    assert relative_mse(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.0])) == pytest.approx(0.5)


def test_fit_reports_its_own_error_and_density_and_runs_fit_steps_adam_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(200, 16, generator=gen)
    outputs = DenseTopK(4)(inputs)  # exactly 4 of 16 non-zero: density 1/4
    steps: list[int] = []
    pools: list[int] = []
    original, randint = torch.optim.Adam.step, torch.randint
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    monkeypatch.setattr(torch, "randint", lambda high, *a, **k: pools.append(high) or randint(high, *a, **k))
    module, error = fit_layer_surrogate(inputs, outputs, FitSettings(steps=7, pool_elements=800), gen)
    assert len(steps) == 7
    assert set(pools) == {800}  # mini-batches from a pool of pool_elements (of 3,200), 256 + 256 + 256 + 32 by chunk
    assert module.density == 0.25
    assert not any(p.requires_grad for p in module.parameters())
    with torch.no_grad():
        assert error == pytest.approx(relative_mse(module(inputs), outputs), rel=1e-5)
    silent, _ = fit_layer_surrogate(inputs, torch.zeros_like(inputs), FitSettings(steps=1), gen)
    assert silent.density == 1 / 16  # a layer that never fires: one unit per row, not density 0


def test_fit_pool_is_a_random_sample_of_every_chunk() -> None:
    # In each chunk of 64 rows the first 32 are silent (zero in, zero out) and the rest a top-4 layer. A pool of a
    # quarter of the elements drawn at random holds active rows; the first quarter of every chunk would hold only
    # silent ones, and the gate would never learn the top-4 rows.
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 16, generator=gen)
    inputs.view(4, 64, 16)[:, :32] = 0
    outputs = DenseTopK(4)(inputs)
    module, _ = fit_layer_surrogate(inputs, outputs, FitSettings(steps=200, pool_elements=1024), gen)
    active = inputs.abs().sum(1) > 0
    with torch.no_grad():
        assert relative_mse(module(inputs[active]), outputs[active]) < 0.25


def test_fit_keeps_at_most_max_rows_inputs() -> None:
    rows = Rows()
    model = nn.Sequential(nn.Linear(D, H), rows, nn.Linear(H, 3)).eval()
    x = torch.rand(10, D, generator=torch.Generator().manual_seed(0))
    fit_layer_surrogates(model, x, ThreatModel("linf", 0.1), FitSettings(steps=1, perturbations=3, max_rows=25),
                         torch.Generator().manual_seed(0), names=["1"])
    assert sum(rows.seen) == 25  # of the 40 rows (batch + 3 perturbed copies)


@pytest.mark.parametrize(("cls", "params", "field"), [
    (FitSettings, {"steps": -1}, "fit_steps"),
    (FitSettings, {"lr": 0.0}, "fit_lr"),
    (FitSettings, {"hidden": 0}, "fit_hidden"),
    (DistillSettings, {"batch_rows": 0}, "distill_batch_rows"),
    (DistillSettings, {"steps": -1}, "distill_steps"),
    (DistillSettings, {"lr": 0.0}, "distill_lr"),
])
def test_settings_reject_bad_budgets(cls: type, params: dict, field: str) -> None:
    with pytest.raises(AttackConfigError, match=field):
        cls(**params)


# --- the twin ------------------------------------------------------------------------------------------------


def test_twin_distils_on_perturbed_batches_of_batch_rows_and_comes_back_frozen_in_eval() -> None:
    target = Recorder(kwta_mlp())
    x, _ = batch(target.model, n=10)
    threat = ThreatModel("linf", 0.1)
    target.train()  # the twin is in eval mode whatever the target's mode
    twin, errors = distill_model_twin(target, x, threat, FitSettings(steps=5), DistillSettings(steps=6, batch_rows=4),
                                      torch.Generator().manual_seed(0))
    distill_calls = [c for c in target.queries if len(c) == 4]
    assert len(distill_calls) == 6
    for xb in distill_calls:  # random points of the ball around batch rows, not the rows themselves
        nearest = torch.cdist(xb, x).argmin(1)
        assert bool(threat.contains(xb, x[nearest]).all()) and not bool((xb[:, None] == x[None]).all(-1).any())
    assert not any(m.training for m in twin.modules())
    assert not any(p.requires_grad for p in twin.parameters())
    assert set(errors) == {"model.1", "model.3", "logits"}
    assert all(isinstance(twin.get_submodule(name), GroupGateSurrogate) for name in ("model.1", "model.3"))
    check = target.queries[-1]  # the logit error's inputs: the clean batch and one perturbed copy
    assert len(check) == 20 and torch.equal(check[:10], x) and bool(threat.contains(check[10:], x).all())
    with torch.no_grad():
        target_logits, twin_logits = target.model(check), twin.model(check)
    centred = [z - z.mean(1, keepdim=True) for z in (twin_logits, target_logits)]
    assert errors["logits"] == pytest.approx(relative_mse(*centred), rel=1e-5)
    assert errors["logits"] != pytest.approx(relative_mse(*centred[::-1]), rel=1e-3)  # the target's energy divides


def test_distillation_lowers_the_logit_error_and_ignores_a_logit_shift() -> None:
    model = kwta_mlp(seed=2)
    with torch.no_grad():
        model[-1].bias += 50.0  # softmax ignores it; the reported error compares centred logits
    x, _ = batch(model, n=64)
    threat = ThreatModel("linf", 0.1)
    fit = FitSettings(steps=100)
    errors = [distill_model_twin(model, x, threat, fit, DistillSettings(steps=steps, lr=3e-3),
                                 torch.Generator().manual_seed(0))[1]["logits"] for steps in (0, 60)]
    assert errors[0] < 1.0  # the layer fits alone already track the centred logits
    assert errors[1] < 0.8 * errors[0], errors


class GradModeSpy(nn.Module):
    """Wraps a model and records whether autograd was recording during each forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.grad_enabled: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.model(x)


def test_gradient_swap_runs_the_target_without_gradients_and_the_twin_only_when_one_is_wanted() -> None:
    twin = Recorder(kwta_mlp(seed=1))
    target = GradModeSpy(kwta_mlp(seed=0))
    swap = GradientSwapModel(target, twin)
    x = torch.rand(3, D)
    swap(x)
    with torch.no_grad():
        swap(x.requires_grad_(True))
    assert twin.queries == []
    swap(x)
    assert len(twin.queries) == 1 and target.grad_enabled == [False] * 3


def test_fit_pairs_each_pool_element_with_its_own_rows_scale() -> None:
    # f(h) = h + std_sample(h): the gate open, residual 1 (g's residual is scaled by the row's std). Rows of scales
    # 1 to 128: pairing an element with another row's scale would leave a residual error of the scales' spread.
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 16, generator=gen) * 2.0 ** torch.arange(256).remainder(8)[:, None]
    outputs = inputs + inputs.std(dim=1, keepdim=True)
    _, error = fit_layer_surrogate(inputs, outputs, FitSettings(steps=300, pool_elements=2048), gen)
    assert error < 0.01
