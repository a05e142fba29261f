"""Two BPDA stages of one inner-attack seed were named whatever their inner attacks, although an EOT stage with
``random_start: false`` draws no random start: its own generator draws nothing, and the first numbers its seed gives
are a randomized model's noise (the global generators ``rng_scope`` seeds). EOT now declares that where it registers
(``attacks.adaptive.eot_draw``), and a PGD stage of that seed is no longer named beside it; two EOT stages still are
(the same model noise), and an EOT stage that starts at random still is beside a PGD one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.base import ThreatModel, create_attack, seeded_generator
from kwta_robust.bpda_seeds import first_draw
from test_seeds50_bpda_stage_seeds import bpda, warnings_of  # a digits config's warnings; a 3-stage BPDA over PGD

QUIET_EOT = {"inner": "eot", "inner_params": {"random_start": False, "eot_samples": 1}}


class NoisyLinear(nn.Module):
    """A randomized classifier ``[N, 1, 3, 3] -> [N, 3]`` adding global-RNG noise to its logits, keeping the first."""

    def __init__(self, noise: float) -> None:
        super().__init__()
        self.linear = nn.Linear(9, 3)
        self.noise = noise
        self.first: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        drawn = torch.randn(logits.shape)
        self.first = drawn if self.first is None else self.first
        return logits + self.noise * drawn


def test_eot_without_random_start_draws_the_models_noise_first() -> None:
    torch.manual_seed(0)
    model, x, y = NoisyLinear(0.0), torch.rand(4, 1, 3, 3), torch.tensor([0, 1, 2, 0])
    threat = ThreatModel("linf", 0.1, (0.0, 1.0))
    runs = [create_attack("eot", steps=2, eot_samples=1, random_start=False, seed=seed)(model, x, y, threat)
            for seed in (5, 6)]
    torch.testing.assert_close(runs[0], runs[1])  # its own generator draws nothing: the seed changes nothing
    model.noise, model.first = 0.1, None
    create_attack("eot", steps=2, eot_samples=1, random_start=False, seed=6)(model, x, y, threat)
    assert model.first is not None
    torch.testing.assert_close(model.first, torch.randn(model.first.shape, generator=seeded_generator(6, "cpu")))
    assert first_draw("eot", {"random_start": False}) == "model noise"  # attacks.seed_draws.MODEL_NOISE
    assert first_draw("eot", {}) == "random start"


def test_an_eot_stage_without_random_start_is_not_named_beside_a_pgd_stage(caplog: pytest.LogCaptureFixture) -> None:
    assert warnings_of(caplog, [bpda("a", seed=5, **QUIET_EOT), bpda("b", seed=6)]) == []
    assert warnings_of(caplog, [bpda("a", seed=5), bpda("b", seed=6, **QUIET_EOT)]) == []
    # a stage of its own: stage 1 of 'a' runs EOT without random start, its PGD stages none
    stages = [{}, {"inner": "eot", "eot_samples": 1}, {}]
    own = bpda("a", seed=5, inner_params={"random_start": False}, stage_params=stages)
    assert warnings_of(caplog, [own, bpda("b", seed=6)]) == []
    # still named: two EOT stages (the same model noise), an EOT stage that starts at random beside a PGD one
    both = warnings_of(caplog, [bpda("a", seed=5, **QUIET_EOT), bpda("b", seed=6, **QUIET_EOT)])
    assert len(both) == 1 and "'a' stage 1 and 'b' stage 0 both take inner-attack seed 6" in both[0]
    started = warnings_of(caplog, [bpda("a", seed=5, inner="eot", inner_params={"eot_samples": 1}),
                                   bpda("b", seed=6)])
    assert len(started) == 1 and "'a' stage 1 and 'b' stage 0 both take inner-attack seed 6" in started[0]
