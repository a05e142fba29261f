"""BPDA splits ``inner_params.steps`` (a total) over its stages; a stage whose own ``inner`` takes no steps
(``fgsm``) gets none, and no share of it, as with the inner attack's default total: given explicitly, the total
was passed to that stage as its own parameter and refused (``attack 'fgsm': unknown parameter 'steps'``)."""

from __future__ import annotations

import torch
from torch import nn

from attacks import create_attack
from attacks.base import ThreatModel


def test_a_stage_without_steps_takes_no_share_of_an_explicit_total() -> None:
    stages = [{}, {"inner": "fgsm"}]
    given = create_attack("bpda", surrogate="smooth", inner="pgd", inner_params={"steps": 6},
                          temperature_schedule=[0.1, 0.05], stage_params=stages)
    default = create_attack("bpda", surrogate="smooth", inner="pgd", temperature_schedule=[0.1, 0.05],
                            stage_params=stages)
    assert [type(s).__name__ for s in given.stages] == ["PGD", "FGSM"]
    # the whole total goes to the stages that take steps (session 50: before, the FGSM stage's share was lost)
    assert (given.stages[0].steps, default.stages[0].steps) == (6, 40)
    assert given.attack_settings()["inner"][1] == {"attack": "fgsm", "loss": "ce"}
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3)).eval()
    x = torch.rand(4, 6)
    y = model(x).argmax(dim=1)
    x_adv = given(model, x, y, ThreatModel("linf", 0.05))  # no layer to act on: the first stage runs alone
    assert x_adv.shape == x.shape and float((x_adv - x).abs().max()) <= 0.05 + 1e-6
