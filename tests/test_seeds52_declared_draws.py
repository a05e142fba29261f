"""Every built-in attack declares what it draws first from its seed where it registers (``attacks.seed_draws``), and
the declarations that say "nothing" are true: such an attack returns the same inputs whatever its seed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.base import ThreatModel, attack_info, available_attacks, create_attack
from attacks.seed_draws import first_draw_of

#: Attacks declared to draw nothing with these parameters, and a small budget for each.
NOTHING = [("fgsm", "linf", {}), ("cw", "l2", {"steps": 3, "search_steps": 1}), ("deepfool", "linf", {"steps": 3}),
           ("pgd", "linf", {"steps": 2, "random_start": False}), ("fab", "linf", {"steps": 3, "restarts": 1}),
           ("fab-t", "l2", {"steps": 3, "restarts": 1, "n_target_classes": 2})]


def test_every_built_in_attack_declares_its_first_draw() -> None:
    undeclared = [name for name in available_attacks() if attack_info(name).draws is None]
    assert undeclared == []
    assert {name: first_draw_of(name, {}) for name in ("pgd", "apgd-t", "eot", "fab", "gradient-estimation")} == {
        "pgd": "random start", "apgd-t": "random start", "eot": "random start", "fab": None,
        "gradient-estimation": "Gaussian probes"}
    assert first_draw_of("bpda", {"inner": "pgd", "inner_params": None, "seed": 3}) == "random start"
    assert first_draw_of("bpda", {"inner_params": {"seed": 4}, "seed": 3}) == "model noise"


@pytest.mark.parametrize("name, norm, params", NOTHING)
def test_an_attack_declared_to_draw_nothing_ignores_its_seed(name: str, norm: str, params: dict) -> None:
    assert first_draw_of(name, params) is None
    torch.manual_seed(0)
    model, x, y = nn.Sequential(nn.Flatten(), nn.Linear(9, 3)), torch.rand(4, 1, 3, 3), torch.tensor([0, 1, 2, 0])
    threat = ThreatModel(norm, 0.1 if norm == "linf" else 0.5, (0.0, 1.0))
    runs = [create_attack(name, seed=seed, **params)(model, x, y, threat) for seed in (5, 6)]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
