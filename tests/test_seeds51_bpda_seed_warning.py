"""The BPDA stage-seed warning: logged once per command (it was logged by the config's validation, which re-runs at
every CLI override, ``--data`` and in every shard worker: twice with ``--n-examples``), and only where both stages
that share a seed draw random numbers from it (a PGD stage without random start, an FGSM stage, a fixed
temperature draw none). Two BPDA attacks of the very same seed are still named (their surrogate fits and a
randomized model's noise share it)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from kwta_robust.api import as_config
from kwta_robust.config import load_config
from kwta_robust.datafile import pin_data_file, with_data_file

BASE = {"dataset": "digits", "n_examples": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}]}
DRAWN = {"log_uniform": [0.02, 0.1]}


def bpda(label: str, seed: int, schedule: list | None = None, **params: object) -> dict:
    return {"attack": "bpda", "label": label,
            "params": {"surrogate": "smooth", "inner": "pgd", "temperature_schedule": schedule or [0.1, 0.05, 0.02],
                       "seed": seed, **params}}


def warnings_of(caplog: pytest.LogCaptureFixture, attacks: list[dict]) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        as_config({**BASE, "attacks": attacks})
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_one_line_per_command_whatever_re_validates_the_config(caplog: pytest.LogCaptureFixture,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({**BASE, "attacks": [bpda("a", 5), bpda("b", 6)]}), encoding="utf-8")
    data = tmp_path / "d.pt"
    torch.save({"x": torch.zeros(4, 1, 8, 8), "y": torch.arange(4)}, data)
    with caplog.at_level(logging.WARNING):
        cfg = load_config(path, n_examples=4, seed=3, batch_size=2)  # what `evaluate --n-examples 4 ...` reads
        cfg = pin_data_file(with_data_file(cfg.with_overrides(device="cpu"), str(data)))  # --data, then pinned
    found = [r.getMessage() for r in caplog.records if "both take" in r.getMessage()]
    assert len(found) == 1 and "'a' stage 1 and 'b' stage 0 both take inner-attack seed 6" in found[0]
    assert cfg.n_examples == 4 and cfg.data_file is not None


def test_a_shared_seed_warns_only_where_both_stages_draw_from_it(caplog: pytest.LogCaptureFixture) -> None:
    quiet = {"inner_params": {"random_start": False}}  # PGD without random start draws nothing
    assert warnings_of(caplog, [bpda("a", 5, **quiet), bpda("b", 6, **quiet)]) == []
    assert warnings_of(caplog, [bpda("a", 5, inner="fgsm"), bpda("b", 6, inner="fgsm")]) == []
    assert warnings_of(caplog, [bpda("a", 5, inner="fab"), bpda("b", 6, inner="fab")]) == []  # one restart: x
    # one stage drawing is not enough: the other must draw from the seed too
    assert warnings_of(caplog, [bpda("a", 5, **quiet), bpda("b", 6)]) == []
    mixed = warnings_of(caplog, [bpda("a", 5, **quiet), bpda("b", 6, inner="apgd-ce")])
    assert mixed == []
    # a stage of its own: stage 1 of 'a' runs APGD (always a random start) and 'b' stage 0 PGD with its start
    stages = [{"random_start": False}, {"inner": "apgd-ce"}, {"random_start": False}]
    own = warnings_of(caplog, [bpda("a", 5, stage_params=stages), bpda("b", 6)])
    assert len(own) == 1 and "'a' stage 1 and 'b' stage 0 both take inner-attack seed 6" in own[0]
    # the temperature seed: only log-uniform stages draw (stages 1, 2 of each: seeds 6, 7 and 7, 8)
    schedule = [0.1, DRAWN, DRAWN]
    temps = warnings_of(caplog, [bpda("a", 5, schedule, **quiet), bpda("b", 6, schedule, **quiet)])
    assert len(temps) == 1 and "'a' stage 2 and 'b' stage 1 both take temperature seed 7" in temps[0]
    # the same seed: named whatever the stages draw (surrogate fits, a randomized model's noise)
    same = warnings_of(caplog, [bpda("a", 5, **quiet), bpda("b", 5, **quiet)])
    assert len(same) == 1 and "'a' and 'b' both take seed 5" in same[0]


def test_a_plain_attack_drawing_nothing_is_not_named(caplog: pytest.LogCaptureFixture) -> None:
    plain = {"attack": "pgd", "label": "p", "params": {"seed": 6, "random_start": False}}
    assert warnings_of(caplog, [bpda("b", 5), plain]) == []
    quiet = warnings_of(caplog, [bpda("b", 5, inner_params={"random_start": False}),
                                 {"attack": "pgd", "label": "p", "params": {"seed": 6}}])
    assert quiet == []
    found = warnings_of(caplog, [bpda("b", 5), {"attack": "pgd", "label": "p", "params": {"seed": 6}}])
    assert len(found) == 1 and "'p' and 'b' stage 1 (its inner 'pgd') both take seed 6" in found[0]
