"""The BPDA stage-seed warning compared BPDA attacks only, but a plain attack with an explicit seed ``s + 1`` makes
the same draws as stage 1 of a BPDA attack of seed ``s`` whose inner attack it is (PGD's random start, from a
generator seeded alike). The warning now names such a pair too; an attack of another name (its generator used
otherwise) or a derived seed is not compared."""

from __future__ import annotations

import pytest

from kwta_robust.bpda_seeds import overlapping_stage_seeds, stage_inner_attacks
from kwta_robust.config import EvalConfig
from test_seeds50_bpda_stage_seeds import BASE, SCHEDULE, warnings_of  # a config of digits; its warnings


def bpda(label: str, **params: object) -> dict:
    """A three-stage BPDA attack, its inner attack the default (PGD)."""
    return {"attack": "bpda", "label": label,
            "params": {"surrogate": "smooth", "temperature_schedule": SCHEDULE, **params}}


def test_a_plain_pgd_given_a_bpda_stages_seed_warns_and_no_other_pair(caplog: pytest.LogCaptureFixture) -> None:
    found = warnings_of(caplog, [bpda("b", seed=5), {"attack": "pgd", "label": "p", "params": {"seed": 6}}])
    assert len(found) == 1 and "\n" not in found[0]
    assert "'p' and 'b' stage 1 (its inner 'pgd') both take seed 6" in found[0]
    # stage 0 too, and an inner_params.seed is the inner attack's base
    zero = warnings_of(caplog, [{"attack": "pgd", "params": {"seed": 5}}, bpda("b", seed=5)])
    assert len(zero) == 1 and "'pgd' and 'b' stage 0 (its inner 'pgd') both take seed 5" in zero[0]
    inner = warnings_of(caplog, [bpda("b", inner_params={"seed": 20}), {"attack": "pgd", "params": {"seed": 22}}])
    assert len(inner) == 1 and "'b' stage 2" in inner[0]
    # not compared: an attack drawing first otherwise, seeds beyond the stages, seeds the runner derives (APGD's
    # start draws as PGD's since session 51's review: tests/test_rev51_plain_seed_first_draw.py)
    assert warnings_of(caplog, [bpda("b", seed=5), {"attack": "square", "params": {"seed": 6}}]) == []
    assert warnings_of(caplog, [bpda("b", seed=5), {"attack": "pgd", "params": {"seed": 8}}]) == []  # stages 5-7
    assert warnings_of(caplog, [bpda("b"), {"attack": "pgd", "params": {"seed": 0}}]) == []  # BPDA's seed derived
    assert warnings_of(caplog, [bpda("b", seed=5), {"attack": "pgd"}]) == []  # pgd's seed derived
    # two plain attacks are not stage seeds: the runner's per-label derivation is replaced, as the user asked
    assert overlapping_stage_seeds(EvalConfig.from_dict({**BASE, "attacks": [
        {"attack": "pgd", "label": "x", "params": {"seed": 1}},
        {"attack": "pgd", "label": "y", "params": {"seed": 1}}]}).labelled_attacks(10)) == []


def test_a_stage_of_its_own_inner_attack_is_compared_by_that_name(caplog: pytest.LogCaptureFixture) -> None:
    params = {"seed": 5, "stage_params": [{}, {"inner": "apgd-ce"}, {}]}
    assert stage_inner_attacks(bpda("b", **params)["params"]) == ["pgd", "apgd-ce", "pgd"]
    found = warnings_of(caplog, [bpda("b", **params), {"attack": "apgd-ce", "params": {"seed": 6}}])
    assert len(found) == 1 and "'apgd-ce' and 'b' stage 1 (its inner 'apgd-ce') both take seed 6" in found[0]
    # a plain pgd's random start draws as the apgd-ce stage's (session 51's review); one without draws nothing
    alike = warnings_of(caplog, [bpda("b", **params), {"attack": "pgd", "params": {"seed": 6}}])
    assert len(alike) == 1 and "'pgd' and 'b' stage 1 (its inner 'apgd-ce', whose seeded random start" in alike[0]
    assert warnings_of(caplog, [bpda("b", **params), {"attack": "pgd", "params": {"seed": 6,
                                                                                  "random_start": False}}]) == []
