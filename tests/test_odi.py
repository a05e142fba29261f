"""Output Diversified Initialization (Tashiro, Song & Ermon, NeurIPS 2020) as APGD's optional start: off by default,
each step of ``odi_step · eps`` along the sign (Linf) / normalised (L2) gradient of ``w · f(x)``, inside the ball,
one query each, validated with one-line errors, settable per BPDA stage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import create_attack
from attacks.base import ThreatModel
from attacks.errors import AttackConfigError


def _linear(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Linear(8, 4).eval()
    x = torch.full((5, 8), 0.5)  # inputs at 0.5: the [0, 1] box never binds at eps 0.1
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y


def test_zero_steps_return_the_start_and_draw_nothing() -> None:
    from attacks.odi import odi_start

    model, x, _ = _linear()
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    x0 = x + 0.05
    assert torch.equal(odi_start(model, x, x0, ThreatModel("linf", 0.1), 0, 1.0, generator), x0)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_one_step_follows_the_random_output_direction(norm: str) -> None:
    """On a linear model ``f(x) = W x + b`` the gradient of ``w · f`` is ``W^T w`` whatever ``x``: one step from the
    clean input moves by ``eps`` along its sign (Linf) or its direction (L2), with ``w`` the generator's first
    ``[N, C]`` uniform draw mapped to ``[-1, 1]``."""
    from attacks.odi import odi_start

    model, x, _ = _linear()
    threat = ThreatModel(norm, 0.1)
    moved = odi_start(model, x, x, threat, 1, 1.0, torch.Generator().manual_seed(7))
    w = 2 * torch.rand((5, 4), generator=torch.Generator().manual_seed(7)) - 1
    direction = (w @ model.weight).detach()
    if norm == "linf":
        expected = x + 0.1 * direction.sign()
    else:
        expected = x + 0.1 * direction / direction.norm(dim=1, keepdim=True)
    assert torch.allclose(moved, expected, atol=1e-6)
    with torch.no_grad():  # and w · f rose on every sample
        assert bool(((model(moved) - model(x)) * w).sum(dim=1).gt(0).all())


def test_steps_stay_in_the_ball_and_cost_one_query_each() -> None:
    model, x, y = _linear(1)
    calls: list[int] = []
    model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    threat = ThreatModel("linf", 0.01)  # too small to flip any sample: every run goes its full length
    for odi_steps in (0, 3):
        calls.clear()
        x_adv = create_attack("apgd-ce", steps=4, odi_steps=odi_steps, odi_step=2.0)(model, x, y, threat)
        assert len(calls) == [6, 9][odi_steps == 3]  # the label check, the start, 4 steps; then 3 ODI steps more
        assert float((x_adv - x).abs().max()) <= 0.01 + 1e-7
        with torch.no_grad():
            assert torch.equal(model(x_adv).argmax(dim=1), y)


def test_default_is_off_and_the_start_moves_only_when_asked() -> None:
    model, x, y = _linear(2)
    threat = ThreatModel("linf", 0.1)
    plain = create_attack("apgd-t", steps=3, n_target_classes=2)(model, x, y, threat)
    assert create_attack("apgd-t").odi_steps == 0 and create_attack("apgd-dlr").odi_step == 1.0
    assert torch.equal(create_attack("apgd-t", steps=3, n_target_classes=2, odi_steps=0)(model, x, y, threat), plain)
    odi = create_attack("apgd-ce", steps=1, odi_steps=2)(model, x, y, threat)
    assert not torch.equal(odi, create_attack("apgd-ce", steps=1)(model, x, y, threat))


@pytest.mark.parametrize(("attack", "params", "message"), [
    ("apgd-ce", {"odi_steps": -1}, "attack 'apgd-ce': odi_steps must be an integer >= 0, got -1"),
    ("apgd-dlr", {"odi_steps": 1.5}, "attack 'apgd-dlr': odi_steps must be an integer >= 0, got 1.5"),
    ("apgd-t", {"odi_step": 0}, "attack 'apgd-t': odi_step must be a finite number > 0, got 0"),
])
def test_bad_values_are_one_line_errors(attack: str, params: dict, message: str) -> None:
    with pytest.raises(AttackConfigError) as caught:
        create_attack(attack, **params)
    assert str(caught.value) == message


def test_bpda_sets_it_per_stage_and_records_it() -> None:
    bpda = create_attack("bpda", surrogate="smooth", inner="apgd-ce", stage_steps=[3, 4],
                         temperature_schedule=[0.1, 0.05], stage_params=[{}, {"odi_steps": 2}])
    assert [stage.odi_steps for stage in bpda.stages] == [0, 2]
    assert [s["odi_steps"] for s in bpda.attack_settings()["inner"]] == [0, 2]
    with pytest.raises(AttackConfigError, match=r"stage_params\[0\]: attack 'apgd-ce': odi_steps must be an integer "):
        create_attack("bpda", inner="apgd-ce", stage_steps=[3], temperature_schedule=[0.1],
                      stage_params=[{"odi_steps": -2}])
