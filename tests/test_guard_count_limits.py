"""Every integer count of a config or an attack is at most 10**9 (``attacks.errors.COUNT_LIMIT``), refused in one
line naming the field and the bound.

Python's ints have no bound, so ``budget_check.factor: 10**30`` or ``verdict_draws: 2**70`` used to be accepted and
then ran "forever" or overflowed inside torch."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from attacks.base import AttackConfigError, create_attack
from attacks.noise import run_noise_probe
from attacks.surrogates import FitSettings
from attacks.verdicts import classify
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError
from kwta_robust.sparsity import PruningConfig
from kwta_robust.training.config import TrainConfig
from test_cli_eval import run_error, write_checkpoint, write_config

BOUND = "must be at most 1,000,000,000 (10**9; no real run needs more), got"
BOUND_RE = re.escape(BOUND)
BASE = {"dataset": "mnist5k", "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": ["fgsm"]}
HUGE = 10**30


def nested(path: str, value: Any) -> dict:
    """``{"a": {"b": value}}`` for ``"a.b"``."""
    *parents, key = path.split(".")
    data: dict = {key: value}
    for parent in reversed(parents):
        data = {parent: data}
    return data


@pytest.mark.parametrize("path", ["verdict_draws", "diagnostics.budget_check.factor",
                                  "diagnostics.budget_check.samples", "diagnostics.budget_check.attacks",
                                  "diagnostics.gradient_batch", "batch_size", "n_examples"])
def test_an_eval_config_count_above_the_bound_names_its_field(path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EvalConfig.from_dict({**BASE, **nested(path, HUGE)})
    assert str(caught.value) == f"{path}: {BOUND} an integer of 31 digits"


@pytest.mark.parametrize("attack, key, named", [
    ("pgd", "steps", "attack 'pgd': steps"), ("apgd-ce", "restarts", "attack 'apgd-ce': restarts"),
    ("square", "n_queries", "attack 'square': n_queries"), ("eot", "eot_samples", "eot_samples:"),
    ("gradient-estimation", "query_batch_size", "query_batch_size:"),
])
def test_an_attack_count_above_the_bound_names_the_attack_and_parameter(attack: str, key: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EvalConfig.from_dict({**BASE, "attacks": [{"attack": attack, "params": {key: 2**70}}]})
    assert str(caught.value) == f"attacks[0]: {named} {BOUND} an integer of 22 digits"


def test_the_bound_itself_is_accepted_and_one_above_is_not() -> None:
    # each of the three checks at its bound: verdict_draws (its own validator), a config Count field (batch_size,
    # noise draws) and an attack parameter (attacks.errors.count_problem)
    cfg = EvalConfig.from_dict({**BASE, "verdict_draws": 10**9, "batch_size": 10**9,
                                "noise": [{"kind": "numenta", "levels": [0.1], "draws": 10**9}],
                                "attacks": [{"attack": "pgd", "params": {"steps": 10**9}}],
                                "diagnostics": {"budget_check": {"enabled": False}}})  # no re-run at 3x
    assert cfg.verdict_draws == 10**9 and cfg.attacks[0].params["steps"] == 10**9
    assert cfg.batch_size == 10**9 and cfg.noise[0].draws == 10**9
    with pytest.raises(ConfigError, match=rf"^noise\[0\]\.draws: {BOUND_RE} 1000000001$"):
        EvalConfig.from_dict({**BASE, "noise": [{"kind": "numenta", "levels": [0.1], "draws": 10**9 + 1}]})


@pytest.mark.parametrize("attack, params", [("pgd", {"steps": 5 * 10**8}),
                                            ("bpda", {"inner_params": {"steps": 5 * 10**8}}),
                                            ("gradient-estimation", {"samples_end": 5 * 10**8})])
def test_a_budget_check_factor_whose_scaled_budget_exceeds_the_bound_is_refused_before_the_run(
        attack: str, params: dict) -> None:
    """The re-run's attack would refuse 1.5 * 10**9 steps only after every attack had run."""
    entry = {"attack": attack, "params": params}
    with pytest.raises(ConfigError) as caught:
        EvalConfig.from_dict({**BASE, "attacks": [entry]})
    assert str(caught.value).startswith(f"diagnostics.budget_check.factor: 3 times the budget of attack {attack!r} is "
                                        "1,500,000,000, above 1,000,000,000 (10**9; no real run needs more)")
    off = EvalConfig.from_dict({**BASE, "attacks": [entry], "diagnostics": {"budget_check": {"enabled": False}}})
    assert off.attacks[0].params == params  # nothing re-runs: the attack's own budget is within the bound
    seeded = {"steps": 3 * 10**8, "seed": 2**62}  # a seed is not a budget: only the scaled steps count
    assert EvalConfig.from_dict({**BASE, "attacks": [{"attack": "pgd", "params": seeded}]}).attacks[0].params == seeded


@pytest.mark.parametrize("data, field", [
    ({"epochs": HUGE}, "epochs"), ({"batch_size": HUGE}, "batch_size"),
    ({"adversarial": {"steps": HUGE}}, "adversarial.steps"),
    ({"incremental": {"epochs_per_ratio": HUGE}}, "incremental.epochs_per_ratio"),
])
def test_a_training_count_above_the_bound_names_its_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict(data)
    assert str(caught.value) == f"{field}: {BOUND} an integer of 31 digits"


def test_a_pruning_count_above_the_bound_names_its_field() -> None:
    with pytest.raises(ConfigError) as caught:
        PruningConfig.from_dict({"method": "magnitude", "sparsity": 0.5, "rounds": HUGE})
    assert str(caught.value).endswith(f"rounds: {BOUND} an integer of 31 digits")


def test_the_attack_library_refuses_huge_counts_without_kwta_robust() -> None:
    x, y = torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long)
    with pytest.raises(AttackConfigError, match=rf"^attack 'pgd': steps {BOUND_RE} an integer of 31 digits$"):
        create_attack("pgd", steps=HUGE)
    with pytest.raises(AttackConfigError, match=rf"^draws: {BOUND_RE} an integer of 22 digits$"):
        classify(torch.nn.Flatten(), x[:0], y[:0], draws=2**70)  # refused even with no input (no endless loop)
    with pytest.raises(AttackConfigError, match=rf"^noise: batch_size {BOUND_RE} an integer of 31 digits$"):
        run_noise_probe(torch.nn.Flatten(), x, y, kind="gaussian", levels=[0.1], batch_size=HUGE)
    with pytest.raises(AttackConfigError, match=rf"^fit_hidden: {BOUND_RE} 1000000001$"):
        FitSettings(hidden=10**9 + 1)


def test_the_cli_prints_the_bound_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = write_checkpoint(tmp_path / "relu.pt")
    cfg = write_config(tmp_path / "c.yaml", diagnostics={"budget_check": {"factor": HUGE}})
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(tmp_path / "r.json")])
    assert line == f"error: diagnostics.budget_check.factor: {BOUND} an integer of 31 digits"
    assert not (tmp_path / "r.json").exists()
