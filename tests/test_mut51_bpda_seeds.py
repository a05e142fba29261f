"""Mutation review (mut51) of :mod:`kwta_robust.bpda_seeds`: the stage-seed helpers read directly, where the warning
tests (test_seeds50/51, test_minor50) let mutants through — the stage count of a BPDA attack without a schedule,
seeds wrapped modulo ``SEED_LIMIT`` as BPDA takes them, a bool that is no seed, a stage's own ``stage_params`` entry
over ``inner_params``, one sentence for one pair of the same seed, and the warning's count of further pairs."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from attacks.errors import SEED_LIMIT
from kwta_robust.bpda_seeds import (draws_from_seed, explicit_stage_seeds, overlapping_stage_seeds, plain_attack_seed,
                                    stage_count, stage_draws, warn_overlapping_stage_seeds)

FIXED = [0.1, 0.05, 0.02]  # three stages, no temperature draws


def spec(attack: str, label: str, **params: object) -> SimpleNamespace:
    return SimpleNamespace(attack=attack, label=label, params=params)


def test_one_stage_without_a_schedule_and_seeds_per_stage() -> None:
    assert stage_count({}) == 1 and stage_count({"temperature_schedule": []}) == 1
    assert explicit_stage_seeds({"seed": 5}) == {"inner-attack": [5], "temperature": [5]}
    assert explicit_stage_seeds({"seed": 5, "temperature_schedule": FIXED}) == {
        "inner-attack": [5, 6, 7], "temperature": [5, 6, 7]}
    assert explicit_stage_seeds({"seed": 5, "inner_params": {"seed": 20}, "temperature_schedule": FIXED}) == {
        "inner-attack": [20, 21, 22], "temperature": [5, 6, 7]}
    assert explicit_stage_seeds({"seed": True}) == {}  # a bool is no seed


def test_seeds_wrap_modulo_seed_limit_as_bpda_takes_them() -> None:
    seeds = explicit_stage_seeds({"seed": SEED_LIMIT - 1, "temperature_schedule": [0.1, 0.05]})
    assert seeds["inner-attack"] == [SEED_LIMIT - 1, 0]
    assert plain_attack_seed(spec("pgd", "p", seed=SEED_LIMIT + 3)) == 3
    assert plain_attack_seed(spec("bpda", "b", seed=3)) is None


def test_what_draws_from_a_seed() -> None:
    assert draws_from_seed("my-plugin-attack", {}) is True  # not registered: counts as drawing
    assert draws_from_seed("fgsm", {}) is False and draws_from_seed("pgd", {}) is True
    assert draws_from_seed("pgd", {"random_start": False}) is False
    assert draws_from_seed("fab", {"restarts": 1}) is False and draws_from_seed("fab", {"restarts": 2}) is True
    # fixed temperatures draw nothing; a stage's own entry overrides inner_params
    params = {"inner_params": {"random_start": False}, "stage_params": [{"random_start": True}, {}],
              "temperature_schedule": [0.1, {"log_uniform": [0.02, 0.1]}]}
    assert stage_draws(params) == {"inner-attack": [True, False], "temperature": [False, True]}


def test_one_sentence_for_two_bpda_attacks_of_the_same_seed() -> None:
    found = overlapping_stage_seeds([spec("bpda", "a", seed=5, temperature_schedule=FIXED),
                                     spec("bpda", "b", seed=5, temperature_schedule=FIXED)])
    assert found == ["'a' and 'b' both take seed 5 (every stage; BPDA's seed also seeds its surrogate fits and a "
                     "randomized model's noise)"]


def test_the_warning_counts_the_further_pairs(caplog: pytest.LogCaptureFixture) -> None:
    """Three attacks seeds one apart: pairs a-b, a-c (stage 2 and 0, seed 7) and b-c, in one line."""
    specs = [spec("bpda", label, seed=seed, temperature_schedule=FIXED)
             for label, seed in (("a", 5), ("b", 6), ("c", 7))]
    with caplog.at_level(logging.WARNING):
        warn_overlapping_stage_seeds(specs)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(messages) == 1
    assert "'a' stage 1 and 'b' stage 0 both take inner-attack seed 6 (and 2 more)" in messages[0]
