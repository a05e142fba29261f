"""What the README's sections "Python API", "Evaluation configs" and "What a record holds, and the flags" say of
the shipped configs and of the diagnostics switch, held against the configs and the runner: each row of the
``eval_configs/`` table names the attacks, budgets, threat points and sample counts its file holds; ``quick.yaml``
on a kWTA model is flagged ``gates-without-bpda``; ``enabled: false`` under ``diagnostics`` runs no check and no
budget check, under ``diagnostics.budget_check`` no budget check; the minimal config the README prints is one the
loader takes as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from kwta_robust.api import as_config, evaluate_model
from kwta_robust.config import EvalConfig
from kwta_robust.training import TrainConfig
from test_python_api import make_net, toy_data
from test_readme import spans, table_rows

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "eval_configs"


@pytest.fixture(scope="module")
def rows() -> dict[str, str]:
    """The ``eval_configs/`` table of the README: each file it names -> the text of its ``what`` cell."""
    table = table_rows((ROOT / "README.md").read_text(encoding="utf-8"), "| file | what |")
    return {name: row[1] for row in table for name in spans(row[0])}


def raw(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))


def attacks_of(config: dict) -> list[tuple[str, dict]]:
    return [(a["attack"], a.get("params") or {}) for a in config.get("attacks") or []]


def test_quick_yaml_is_pgd_20_and_fgsm_at_linf_0_3_on_100_mnist5k_images_with_the_linf_1_sanity_attack(rows):
    what, config = rows["quick.yaml"], raw("quick.yaml")
    assert "PGD-20 + FGSM, Linf 0.3, 100 mnist5k images, the Linf 1.0 sanity attack" in what
    assert attacks_of(config) == [("pgd", {"steps": 20, "loss": "ce"}), ("fgsm", {})]
    assert config["threats"] == [{"norm": "linf", "epsilons": [0.3]}]
    assert (config["dataset"], config["split"], config["n_examples"]) == ("mnist5k", "test", 100)
    sanity = config["diagnostics"]["sanity"]
    assert (sanity["attack"], sanity["norm"], sanity["eps"]) == ("pgd", "linf", 1.0)


def test_quickstart_yaml_holds_the_stages_its_row_describes(rows):
    what, config = rows["quickstart.yaml"], raw("quickstart.yaml")
    assert what.startswith("the quickstart suite: PGD-10, BPDA-smooth (APGD-CE inside: 100 steps at T = 0.05, then, "
                           "with T drawn at every step log-uniformly in [0.02, 0.1] and a first step of 0.5 eps, 150 "
                           "steps, 400 on the 50% of the survivors closest to breaking and 1,200 on the closest 25%)")
    assert "Numenta noise, the sanity attack (PGD-100 at Linf 1.0 must leave ~0%)" in what
    (pgd, pgd_params), (bpda, params) = attacks_of(config)
    assert (pgd, pgd_params["steps"], bpda) == ("pgd", 10, "bpda")
    assert (params["surrogate"], params["inner"]) == ("smooth", "apgd-ce")
    assert params["stage_steps"] == [100, 150, 400, 1200] and params["stage_keep"] == [1, 1, 0.5, 0.25]
    drawn = {"log_uniform": [0.02, 0.1]}
    assert params["temperature_schedule"] == [0.05, drawn, drawn, drawn]
    assert params["stage_params"] == [{}] + [{"initial_step": 0.5}] * 3
    assert [probe["kind"] for probe in config["noise"]] == ["numenta"]
    sanity = config["diagnostics"]["sanity"]
    assert (sanity["attack"], sanity["params"]["steps"], sanity["norm"], sanity["eps"]) == ("pgd", 100, "linf", 1.0)


def test_the_full_and_cifar10_suites_are_at_the_threat_points_their_rows_name(rows):
    assert "the full suite on mnist5k at Linf 0.1 / 0.2 / 0.3" in rows["mnist5k-full.yaml"]
    full = raw("mnist5k-full.yaml")
    assert full["dataset"] == "mnist5k" and full["threats"] == [{"norm": "linf", "epsilons": [0.1, 0.2, 0.3]}]
    assert "the CIFAR-10 suite at Linf 8/255 and L2 0.5" in rows["cifar10.yaml"]
    cifar = raw("cifar10.yaml")
    assert cifar["dataset"] == "cifar10"
    assert cifar["threats"] == [{"norm": "linf", "epsilons": ["8/255"]}, {"norm": "l2", "epsilons": [0.5]}]


def test_noise_yaml_holds_noise_probes_only(rows):
    assert rows["noise.yaml"] == "noise probes only (Gaussian, uniform, salt-and-pepper, Numenta)"
    config = EvalConfig.from_yaml(CONFIGS / "noise.yaml")
    assert len(config.attacks) == 0 and config.suite is None and len(config.threats) == 0
    assert {probe.kind for probe in config.noise} == {"gaussian", "uniform", "salt-and-pepper", "numenta"}


def test_the_training_recipes_are_twins_that_differ_in_the_activation_alone(rows):
    assert rows["train_cnn_kwta.yaml"] == rows["train_cnn_relu.yaml"] == "training recipes for the small CNN twins"
    kwta, relu = (TrainConfig.from_yaml(CONFIGS / f"train_cnn_{name}.yaml").to_dict() for name in ("kwta", "relu"))
    assert (kwta["arch"], kwta["activation"]["name"], relu["activation"]["name"]) == ("cnn", "kwta", "relu")
    differ = sorted(key for key in kwta if kwta[key] != relu[key])
    assert differ == ["activation", "out"]


def test_quick_yaml_on_a_kwta_model_is_flagged_gates_without_bpda_critical():
    """quick.yaml runs no BPDA and no gradient-free attack: on a model with a top-k gate the record must say that its
    number is what gradient masking lets through (a critical flag), on the samples asked for."""
    x, y = toy_data()
    record = evaluate_model(make_net().eval(), as_config(CONFIGS / "quick.yaml", n_examples=8), x, y, threads=1)
    assert record.clean.n == 8 and [(s.label, s.norm, s.eps) for s in record.sanity] == [("sanity-pgd", "linf", 1.0)]
    flags = {f.code: f for f in record.diagnostics}
    assert flags["gates-without-bpda"].severity == "critical"
    assert flags["gates-without-bpda"].evidence["missed_by_bpda"] == ["3"]  # the TopK module of make_net


def test_diagnostics_enabled_false_runs_no_check_and_budget_check_enabled_false_no_budget_check(monkeypatch):
    """The same run with the default (``enabled: true``) has a flag and a passed budget check, so their absence with
    ``enabled: false`` is the switch, not a run with nothing to flag. The checks and the budget check are watched
    being called: with nothing probed, a check that ran would flag nothing, so the empty list alone would not show
    that it did not run (nor that the budget check's re-runs were skipped)."""
    import kwta_robust.evaluate as runner

    calls = []
    for name in ("run_checks", "run_budget_check"):
        real = getattr(runner, name)
        monkeypatch.setattr(runner, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    x, _ = toy_data()
    with torch.no_grad():
        y = make_net().eval()(x).argmax(1)  # every sample clean-correct: PGD at a tiny eps leaves survivors
    config = {"n_examples": 16, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.001]}],
              "attacks": [{"attack": "pgd", "params": {"steps": 5}}]}
    records = []
    for enabled in (True, False):
        calls.append(f"enabled: {enabled}")
        records.append(evaluate_model(make_net().eval(), {**config, "diagnostics": {"enabled": enabled}}, x, y,
                                      threads=1))
    on, off = records
    assert calls == ["enabled: True", "run_budget_check", "run_checks", "enabled: False"]
    assert [(f.code, f.severity) for f in on.diagnostics] == [("gates-without-bpda", "critical"),
                                                              ("sanity-not-run", "info"), ("budget-checked", "info")]
    assert off.diagnostics == [] and off.probes == {} and off.to_dict()["diagnostics"] == []
    assert off.results[0].flags == on.results[0].flags and 1 in off.results[0].flags  # the suite itself ran alike
    unchecked = evaluate_model(make_net().eval(), {**config, "diagnostics": {"budget_check": {"enabled": False}}}, x,
                               y, threads=1)
    assert [(f.code, f.severity) for f in unchecked.diagnostics] == [("gates-without-bpda", "critical"),
                                                                     ("sanity-not-run", "info")]
    assert calls[4:] == ["run_budget_check", "run_checks"]  # called, and returns nothing: its own switch


def test_the_minimal_config_the_readme_prints_loads_as_written():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"A minimal one:\n\n```yaml\n(.*?)```", text, re.S)
    assert block, "README: the minimal config after 'A minimal one:' is missing"
    config = EvalConfig.from_dict(yaml.safe_load(block.group(1)))
    assert (config.dataset, config.split, config.n_examples, config.seed, config.mode) == ("mnist5k", "test", 200, 0,
                                                                                            "cascade")
    assert [(a.attack, a.label) for a in config.attacks] == [("pgd", ""), ("bpda", "bpda-smooth"),
                                                             ("gradient-estimation", "")]
    assert [t.norm for t in config.threats] == ["linf"] and [p.kind for p in config.noise] == ["numenta"]
