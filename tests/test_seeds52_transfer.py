"""A plain ``transfer`` attack with an explicit seed was compared with BPDA stages by its name only, although its inner
attack runs with that seed (``inner_params`` without another) and draws first what it draws alone: over ``pgd``,
PGD's random start. Transfer now declares its inner attack's first draw where it registers
(``attacks.transfer.transfer_draw``), so a transfer of seed ``s + 1`` beside a BPDA of seed ``s`` over PGD is named
as stage 1's random start; an inner attack seeded otherwise, or drawing nothing, is not."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from attacks.base import ThreatModel, create_attack
from kwta_robust.bpda_seeds import first_draw, overlapping_stage_seeds

FIXED = [0.1, 0.05, 0.02]  # three stages, no temperature draws


def spec(attack: str, label: str, **params: object) -> SimpleNamespace:
    return SimpleNamespace(attack=attack, label=label, params=params)


def test_a_transfer_over_pgd_draws_pgds_start_from_its_seed() -> None:
    torch.manual_seed(0)
    source, x, y = nn.Sequential(nn.Flatten(), nn.Linear(9, 3)), torch.rand(4, 1, 3, 3), torch.tensor([0, 1, 2, 0])
    threat = ThreatModel("linf", 0.1, (0.0, 1.0))

    def transfer(seed: int) -> torch.Tensor:
        return create_attack("transfer", source=source, inner="pgd", inner_params={"steps": 1, "step_size": 1e-3},
                             seed=seed)(source, x, y, threat)

    pgd = create_attack("pgd", steps=1, step_size=1e-3, seed=6)(source, x, y, threat)
    torch.testing.assert_close(transfer(6), pgd)  # the same draws as PGD of that seed
    assert not torch.allclose(transfer(7), pgd)  # and it draws from its seed
    assert first_draw("transfer", {"seed": 6}) == first_draw("pgd", {}) == "random start"


def test_a_plain_transfer_of_a_stage_seed_is_named() -> None:
    bpda = spec("bpda", "b", seed=5, temperature_schedule=FIXED)
    assert overlapping_stage_seeds([bpda, spec("transfer", "t", seed=6)]) == [
        "'t' and 'b' stage 1 (its inner 'pgd', whose seeded random start is drawn alike) both take seed 6"]
    apgd = overlapping_stage_seeds([bpda, spec("transfer", "t", seed=7, inner="apgd-ce")])
    assert apgd == ["'t' and 'b' stage 2 (its inner 'pgd', whose seeded random start is drawn alike) both take seed 7"]
    # not named: an inner attack seeded otherwise or drawing nothing (only a randomized source's noise is drawn)
    assert overlapping_stage_seeds([bpda, spec("transfer", "t", seed=6, inner_params={"seed": 40})]) == []
    assert overlapping_stage_seeds([bpda, spec("transfer", "t", seed=6, inner="fgsm")]) == []
    assert overlapping_stage_seeds([bpda, spec("transfer", "t", seed=6,
                                               inner_params={"random_start": False})]) == []
