"""BPDA stage ``i`` runs with seed ``s + i``: two BPDA attacks of one suite given seeds ``s`` and ``s + 1`` share
stage seeds (stage 1 of the first = stage 0 of the second). The derivation is kept (changing it moves every BPDA
number); the config check warns in one line, and the README says so where BPDA stages are described."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kwta_robust.api import as_config

BASE = {"dataset": "digits", "n_examples": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}]}
SCHEDULE = [0.1, 0.05, 0.02]  # three stages


def bpda(label: str, **params: object) -> dict:
    return {"attack": "bpda", "label": label,
            "params": {"surrogate": "smooth", "inner": "pgd", "temperature_schedule": SCHEDULE, **params}}


def warnings_of(caplog: pytest.LogCaptureFixture, attacks: list[dict]) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        as_config({**BASE, "attacks": attacks})  # logged where a config is read, once (not by validation)
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_seeds_one_apart_warn_in_one_line_naming_the_shared_stage(caplog: pytest.LogCaptureFixture) -> None:
    found = warnings_of(caplog, [bpda("first", seed=5), bpda("second", seed=6)])
    assert len(found) == 1 and "\n" not in found[0]
    assert "'first' stage 1 and 'second' stage 0 both take inner-attack seed 6" in found[0]
    assert "seed + i" in found[0] and "leave seed out" in found[0]


def test_an_inner_seed_counts_and_separated_or_derived_seeds_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    shared = warnings_of(caplog, [bpda("a", inner_params={"seed": 10}), bpda("b", seed=12)])
    assert len(shared) == 1 and "'a' stage 2 and 'b' stage 0 both take inner-attack seed 12" in shared[0]
    assert warnings_of(caplog, [bpda("a", seed=5), bpda("b", seed=8)]) == []  # three stages each: 5-7, 8-10
    assert warnings_of(caplog, [bpda("a"), bpda("b")]) == []  # the runner's seeds, derived per label
    # a plain attack drawing first otherwise than the inner one (a plain pgd or apgd-ce, whose random start draws as
    # pgd's: tests/test_minor50_bpda_plain_seeds.py, tests/test_rev51_plain_seed_first_draw.py)
    assert warnings_of(caplog, [bpda("a", seed=5), {"attack": "square", "params": {"seed": 6}}]) == []


def test_the_readme_says_how_stage_seeds_are_derived() -> None:
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert "Stage `i` of a BPDA attack of seed `s` runs its inner attack with seed `b + i`" in readme
    assert "seeds `s` and `s + 1` share stage seeds" in readme
