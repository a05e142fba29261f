"""DeepFool's 1e-4 nudge is added to the step's length in input units (the authors' code: ``r_i = (pert + 1e-4) *
w / ||w||``; foolbox: ``distances + 1e-4``), not to the logit gap ``|f'|``, which made it ``1e-4 / ||w'||``: 100
times smaller where ``||w'|| = 100``, 100 times larger where ``||w'|| = 0.01``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import ThreatModel, create_attack


def _affine(scale: float) -> nn.Module:
    """Two classes on 6 inputs, ``f' = z_1 - z_0 = -scale · (x_0 + ... + x_5) + 3 scale`` (w' = -scale · 1)."""
    model = nn.Linear(6, 2).double().requires_grad_(False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[scale] * 6, [0.0] * 6], dtype=torch.float64))
        model.bias.copy_(torch.tensor([-2.4 * scale, 0.0], dtype=torch.float64))
    return model


@pytest.mark.parametrize("scale", [100.0, 0.01])
@pytest.mark.parametrize(("norm", "dual"), [("linf", 6.0), ("l2", 6.0 ** 0.5)])  # ||w'|| / s, dual to the norm
def test_one_step_lands_1e_4_past_the_boundary_in_input_units(scale: float, norm: str, dual: float) -> None:
    model = _affine(scale)
    x = torch.full((1, 6), 0.5, dtype=torch.float64)  # z_0 = 3 s - 2.4 s = 0.6 s > z_1 = 0: class 0
    y = torch.zeros(1, dtype=torch.long)
    x_adv = create_attack("deepfool", overshoot=0.0, steps=1)(model, x, y, ThreatModel(norm, 1.0, bounds=(-9, 9)))
    # by hand: |f'| = 0.6 s, ||w'||_1 = 6 s, ||w'||_2 = sqrt(6) s: the boundary is 0.6 / 6 = 0.1 away in Linf and
    # 0.6 / sqrt(6) in L2, whatever s; the step goes 1e-4 further (before: 1e-4 / (6 s) or 1e-4 / (sqrt(6) s))
    expected = 0.6 / dual + 1e-4
    assert float(ThreatModel(norm, 1.0).distance(x_adv, x)) == pytest.approx(expected, rel=1e-12)
    assert int(model(x_adv).argmax()) == 1
