"""Mutation review of kwta_robust/relu_calls.py: each ReLU form counted once (in place too, a clip, positional clamp
bounds), the forms that are no ReLU (an upper bound given by position, a ``False`` bound, an integer tensor, a
tensor not of the batch), and that the count leaves the model, its hooks and the global RNG as they were."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kwta_robust.relu_calls import is_relu_call, relu_calls


class Forms(nn.Module):
    """Each counted form once, each other form beside it."""

    def forward(self, x: Tensor) -> Tensor:
        y = x.clone().relu_() + torch.relu(x) + x.clip(min=0) + torch.clip(x, 0) + torch.clamp(x, 0) + x.clamp_min(0)
        z = torch.clamp(x, 0, 6) + x.clip(0, 1) + x.clamp(min=False) + x.clamp(min=0.5) + x.clamp(min=-0.5)
        w = torch.relu(x.round().long()).float() + torch.relu(x[:2]).sum()  # integer; not the batch
        return y + z + w  # 6 counted


class Noisy(nn.Module):
    """Batch norm (its running statistics move in training mode), dropout and a drawn noise, then a ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.drop = nn.BatchNorm1d(3), nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.drop(self.norm(x)) + torch.rand_like(x))


def test_each_form_counts_once() -> None:
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    assert relu_calls(Forms(), x) == 6
    assert is_relu_call(torch.clamp, (x, 0), {}) and is_relu_call(torch.clamp, (x,), {"min": 0})
    assert not is_relu_call(torch.clamp, (x, 0, 6), {}) and not is_relu_call(torch.clamp, (x,), {"min": False})
    assert not is_relu_call(torch.clamp, (x, -1), {}) and not is_relu_call(torch.clamp, (x, 0), {"max": 1})
    assert is_relu_call(torch.Tensor.clamp_min, (x, 0), {}) and is_relu_call(torch.Tensor.relu_, (x,), {})


def test_the_model_its_hooks_and_the_global_rng_are_left_as_they_were() -> None:
    model = nn.Sequential(Noisy(), nn.Linear(3, 2)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)) * 3 + 2
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    assert relu_calls(model, x, accounted=["1"]) == 1
    assert relu_calls(model, x, accounted=["0"]) == 0  # the ReLU inside an accounted module
    assert torch.equal(torch.get_rng_state(), rng)  # the forward's draws under a seeded scope, restored after
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
