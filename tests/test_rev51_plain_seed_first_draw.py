"""A plain attack was compared with a BPDA stage's inner attack by registry name only, although PGD, APGD, FAB (its
second restart), EOT and gradient estimation (with ``random_start``) all draw their seeded random start first, alike
(``torch.rand(x.shape)`` in Linf): a plain ``apgd-ce`` of seed ``s + 1`` beside a BPDA of seed ``s`` over ``pgd``
starts from stage 1's noise, unnamed. The warning now names pairs whose first draw is alike
(:func:`kwta_robust.bpda_seeds.first_draw`); the same-name sentence is unchanged."""

from __future__ import annotations

import logging

import pytest
import torch

from attacks.apgd import reference_start
from attacks.base import ThreatModel, seeded_generator
from kwta_robust.api import as_config
from kwta_robust.bpda_seeds import first_draw

BASE = {"dataset": "digits", "n_examples": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}]}


def bpda(**params: object) -> dict:
    return {"attack": "bpda", "label": "b",
            "params": {"surrogate": "smooth", "temperature_schedule": [0.1, 0.05, 0.02], "seed": 5, **params}}


def warnings_of(caplog: pytest.LogCaptureFixture, attacks: list[dict]) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        as_config({**BASE, "attacks": attacks})
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_apgds_start_is_pgds_first_draw_of_the_same_seed() -> None:
    x = torch.full((2, 1, 3, 3), 0.5)
    threat = ThreatModel("linf", 0.1, (0.0, 1.0))
    pgd = threat.random_start(x, seeded_generator(6, "cpu")) - x
    apgd = reference_start(x, threat, seeded_generator(6, "cpu")) - x
    scale = apgd.flatten(1).abs().amax(dim=1).view(-1, 1, 1, 1) / pgd.flatten(1).abs().amax(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(apgd, pgd * scale)  # the same noise, up to a per-sample scale
    assert first_draw("pgd", {}) == first_draw("apgd-ce", {}) == first_draw("fab", {"restarts": 2}) == "random start"
    assert first_draw("pgd", {"random_start": False}) == "pgd" and first_draw("square", {}) == "square"


@pytest.mark.parametrize("attack, params", [("apgd-ce", {}), ("apgd-t", {}), ("eot", {}), ("fab", {"restarts": 2}),
                                            ("gradient-estimation", {"random_start": True})])
def test_a_plain_attack_drawing_its_start_alike_is_named(caplog: pytest.LogCaptureFixture, attack: str,
                                                         params: dict) -> None:
    found = warnings_of(caplog, [bpda(), {"attack": attack, "label": "p", "params": {"seed": 6, **params}}])
    assert len(found) == 1 and "\n" not in found[0]
    assert "'p' and 'b' stage 1 (its inner 'pgd', whose seeded random start is drawn alike) both take seed 6" \
        in found[0]


def test_a_plain_attack_drawing_first_otherwise_is_not_named(caplog: pytest.LogCaptureFixture) -> None:
    for plain in ({"attack": "square", "params": {"seed": 6}},
                  {"attack": "gradient-estimation", "params": {"seed": 6}},  # no random start: its estimates first
                  {"attack": "eot", "params": {"seed": 6, "random_start": False}},
                  {"attack": "fab", "params": {"seed": 6}},  # one restart: no draw
                  {"attack": "apgd-ce", "params": {"seed": 9}}):  # beyond the stages' seeds 5-7
        assert warnings_of(caplog, [bpda(), plain]) == [], plain
    # a stage without a random start draws nothing from its seed
    quiet = bpda(inner_params={"random_start": False})
    assert warnings_of(caplog, [quiet, {"attack": "apgd-ce", "params": {"seed": 6}}]) == []
