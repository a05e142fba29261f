"""Fitted BPDA surrogates (attacks/surrogates.py): the learned per-layer surrogate and the distilled model twin, on
tiny kWTA MLPs."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.surrogates import GradientSwapModel, GroupGateSurrogate, collect_layer_io, perturbed_copies, relative_mse
from bpda_models import C, D, H, batch, kwta_mlp, layer_settings, relu_mlp
from kwta_robust.layers import KWTA, smooth_kwta


# --- learned surrogates --------------------------------------------------------------------------------------


class SmoothGateLayer(nn.Module):
    """A BPDA-capable layer whose forward is the smooth kWTA relaxation at temperature 1 (a smooth target)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.temperature = 1.0
        self.__dict__["backward"] = "exact"

    def set_backward(self, backward, temperature=None) -> None:
        self.__dict__["backward"] = backward
        if temperature is not None:
            self.temperature = temperature

    def forward(self, x: Tensor) -> Tensor:
        return smooth_kwta(x, self.k, "dense", 1.0)


@pytest.mark.parametrize("target", ["hard-kwta", "smooth-gate"])
def test_learned_surrogate_fit_errors_are_reported_and_small(target: str) -> None:
    if target == "hard-kwta":
        model = kwta_mlp(ratio=0.25)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(D, H), SmoothGateLayer(8), nn.Linear(H, H), SmoothGateLayer(8),
                                  nn.Linear(H, C)).eval()
    x, y = batch(model, n=64)
    threat = ThreatModel("linf", 0.1)
    attack = create_attack("bpda", surrogate="learned", inner="pgd", inner_params={"steps": 2}, fit_steps=100)
    attack(model, x, y, threat)
    assert set(attack.last_fit_error) == {"1", "3"}
    # Baselines on the same activations: predicting zeros has relative MSE 1; passing the input through
    # (straight-through BPDA's implicit surrogate) has relative MSE ||h - f(h)||² / ||f(h)||² (> 1 here). A useful
    # surrogate must explain at least 90% of the output energy the better trivial baseline leaves unexplained.
    io = collect_layer_io(model, ["1", "3"], perturbed_copies(x, threat, 3, torch.Generator().manual_seed(0)))
    for name, error in attack.last_fit_error.items():
        identity_baseline = relative_mse(io[name][0], io[name][1])
        assert 0.0 <= error < 0.1 * min(1.0, identity_baseline), (name, error, identity_baseline)


def test_learned_surrogate_is_reproducible_for_a_seed() -> None:
    model = kwta_mlp()
    x, y = batch(model)
    threat = ThreatModel("linf", 0.5)
    runs = []
    for _ in range(2):
        attack = create_attack("bpda", surrogate="learned", inner="pgd", inner_params={"steps": 3}, fit_steps=10)
        runs.append((attack(model, x, y, threat), attack.last_fit_error))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


def test_group_gate_surrogate_is_differentiable_for_spatial_inputs() -> None:
    gen = torch.Generator().manual_seed(0)
    module = GroupGateSurrogate(0.2, 4, 8, gen, "cpu", torch.float32)
    h = torch.randn(3, 4, 5, 5, generator=gen, requires_grad=True)
    out = module(h)
    assert out.shape == h.shape
    (grad,) = torch.autograd.grad(out.sum(), h)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# --- the model surrogate -----------------------------------------------------------------------------------------


def test_model_surrogate_leaves_the_target_untouched() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(D, H), nn.BatchNorm1d(H), KWTA(ratio=0.25, boost_strength=1.0, num_units=H),
            nn.Linear(H, C),
        )
    model.eval()
    x, y = batch(model)
    with torch.no_grad():  # give BatchNorm and the duty cycles non-trivial state
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[2].duty_cycle.uniform_(0.0, 0.5)
    model[0].bias.requires_grad_(False)
    model.train()
    model[1].eval()
    flags = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    requires = [p.requires_grad for p in model.parameters()]
    settings = layer_settings(model)

    threat = ThreatModel("linf", 0.1)
    attack = create_attack("bpda", surrogate="model", inner="pgd", inner_params={"steps": 5}, fit_steps=30,
                           distill_steps=20)
    x_adv = attack(model, x, y, threat)

    assert {n: m.training for n, m in model.named_modules()} == flags
    after = model.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(v, after[k]) for k, v in state.items())
    assert [p.requires_grad for p in model.parameters()] == requires
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()), "hooks left behind"
    assert layer_settings(model) == settings
    assert bool(threat.contains(x_adv, x).all())
    assert set(attack.last_fit_error) == {"2", "logits"}
    assert all(v >= 0 and v == v for v in attack.last_fit_error.values())


@pytest.mark.parametrize("surrogate", ["learned", "model"])
@pytest.mark.parametrize("size", [0, 1])
def test_fitted_surrogates_handle_tiny_batches(surrogate: str, size: int) -> None:
    model = kwta_mlp()
    x, y = batch(model, n=size)
    threat = ThreatModel("linf", 0.1)
    attack = create_attack("bpda", surrogate=surrogate, inner="pgd", inner_params={"steps": 2}, fit_steps=5,
                           distill_steps=3)
    x_adv = attack(model, x, y, threat)
    assert x_adv.shape == x.shape and bool(threat.contains(x_adv, x).all())
    assert (attack.last_fit_error != {}) == (size > 0)


def test_gradient_swap_model_forward_is_exact_and_gradient_is_the_twins() -> None:
    target, twin = kwta_mlp(seed=0), relu_mlp(seed=1)
    swap = GradientSwapModel(target, twin)
    x = torch.rand(5, D, generator=torch.Generator().manual_seed(3), requires_grad=True)
    out = swap(x)
    with torch.no_grad():
        assert torch.equal(out, target(x))
    (grad,) = torch.autograd.grad(out.sum(), x)
    (twin_grad,) = torch.autograd.grad(twin(x).sum(), x)
    assert torch.allclose(grad, twin_grad)
