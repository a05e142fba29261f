"""A boosted kWTA layer in train mode relaxes, in its smooth backward pass, the selection its forward made: the
relaxation's scores are boosted with the duty cycles the winners were chosen with, not the ones updated after."""

from __future__ import annotations

import torch

from kwta_robust.layers import KWTA


def _hand_smooth_gradient(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Gradient of sum(x * sigmoid((x - t) / (T * std(x)))), t midway between the largest and second largest of the
    one sample of ``x`` (k = 1): boosting with equal duty cycles scales every score alike, which leaves this
    scale-free gate as it is."""
    x = x.detach().clone().requires_grad_(True)
    top = torch.sort(x[0], descending=True).values
    t = (top[0] + top[1]) / 2
    (x * torch.sigmoid((x - t) / (temperature * x.std(correction=0)))).sum().backward()
    return x.grad


def test_smooth_backward_in_train_mode_uses_the_duty_cycles_of_the_forward_selection() -> None:
    layer = KWTA(k=1, boost_strength=2.0, num_units=3, backward="smooth", temperature=0.5).train()
    x = torch.tensor([[1.0, 0.8, 0.2]], dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert torch.equal(y.detach(), torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(layer.duty_cycle, torch.tensor([1.0, 0.0, 0.0]))  # updated after the selection
    y.sum().backward()
    assert torch.allclose(x.grad, _hand_smooth_gradient(x, 0.5), rtol=1e-10, atol=1e-12)
