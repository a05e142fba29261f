"""Mutation round on :mod:`kwta_robust.attack_plan` and :mod:`kwta_robust.randomness`: the seed of every unit, batch
and sanity attack as its docstring states it, which results a resume keeps, the attacks of a norm in cascade order,
and the randomness probe's verdicts and expected accuracy, against hand-worked values."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from eval_helpers import make_record, make_result
from kwta_robust.attack_plan import (batch_seed, kept_results, model_rng_seed, noise_seed, plan_attacks,
                                     planned_settings, sanity_unit, threat_point_units, unit_seeds)
from kwta_robust.config import EvalConfig, derive_seed
from kwta_robust.errors import ConfigError
from kwta_robust.randomness import (DREW_AFRESH, Randomness, _largest_difference, drew_afresh,
                                    expected_robust_accuracy, log_randomness, probe_randomness, record_draws,
                                    resume_conflict, unseeded_cause)

SANITY = {"norm": "linf", "eps": 1.0, "attack": "pgd", "params": {"steps": 3, "step_size": 0.05}}


def cfg_of(**extra) -> EvalConfig:
    return EvalConfig.from_dict({"dataset": "toy", "seed": 5, "threats": [{"norm": "linf", "epsilons": [0.1]},
                                                                          {"norm": "l2", "epsilons": [0.5]}],
                                 "attacks": [{"attack": "pgd", "params": {"steps": 2}}, "fgsm"], **extra})


# ------------------------------------------------------------------------------------------------- seeds
def test_unit_seeds_key_on_label_norm_and_eps_and_transfer_whatever_its_label():
    specs = cfg_of().labelled_attacks(10)
    planned = plan_attacks(specs, "linf", ["a", "b"])
    seeds = unit_seeds(7, planned, "linf", 0.1)
    assert seeds[:2] == [derive_seed(7, "pgd", "linf", "0.1"), derive_seed(7, "fgsm", "linf", "0.1")]
    assert seeds[2] == seeds[3] == derive_seed(7, "transfer", "linf", "0.1")
    assert unit_seeds(7, planned, "l2", 0.1)[0] != seeds[0]  # the norm is a key


def test_threat_point_units_seed_from_the_configs_seed():
    cfg = cfg_of()
    planned, seeds, built = threat_point_units(cfg, cfg.labelled_attacks(10), "linf", 0.1, {})
    assert [p.label for p in planned] == ["pgd", "fgsm"] and len(built) == 2
    assert seeds == [derive_seed(5, "pgd", "linf", "0.1"), derive_seed(5, "fgsm", "linf", "0.1")]
    planned, seeds, built = threat_point_units(cfg, cfg.labelled_attacks(10), "linf", 0.1, {"r": nn.Linear(2, 2)})
    assert built[-1].seed == seeds[-1] == derive_seed(5, "transfer", "linf", "0.1")  # the transfer attack's seed


def test_batch_and_model_rng_seeds_use_every_id_and_differ():
    ids = torch.tensor([4, 7, 9])
    assert batch_seed(11, ids) == derive_seed(11, "batch", 4, 7, 9)
    assert batch_seed(11, ids) != batch_seed(11, torch.tensor([4, 8, 9]))  # a later id counts too
    assert model_rng_seed(11, ids) == derive_seed(derive_seed(11, "batch", 4, 7, 9), "model-rng")
    assert model_rng_seed(11, ids) != batch_seed(11, ids)


def test_kept_results_drop_a_stale_unit_and_in_cascade_every_later_one():
    found = {"a": SimpleNamespace(seed=1), "b": SimpleNamespace(seed=9), "c": SimpleNamespace(seed=3)}
    record = SimpleNamespace(result=lambda label, norm, eps: found.get(label))
    planned = [SimpleNamespace(label=label) for label in "abcd"]
    assert kept_results(record, planned, [1, 2, 3, 4], "linf", 0.1) == [found["a"], None, None, None]
    assert kept_results(record, planned, [1, 2, 3, 4], "linf", 0.1, cascade=False) == [found["a"], None,
                                                                                          found["c"], None]
    assert kept_results(record, planned, [1, 9, 3, 4], "linf", 0.1) == [found["a"], found["b"], found["c"], None]


def test_sanity_unit_seed_and_layers():
    cfg = cfg_of(diagnostics={"enabled": True, "sanity": SANITY})
    unit, seed = sanity_unit(cfg, layers={"g": "target"})
    assert (unit.label, unit.attack, dict(unit.layers)) == ("sanity-pgd", "pgd", {"g": "target"})
    assert seed == derive_seed(5, "sanity-pgd", "linf", "1.0")
    with pytest.raises(ConfigError, match="^diagnostics.sanity: no sanity attack is configured$"):
        sanity_unit(cfg_of(diagnostics={"enabled": True, "sanity": None}))


def test_noise_seed_depends_on_the_draws():
    spec = SimpleNamespace(kind="gaussian", levels=(0.1,), draws=2, params={})
    assert noise_seed(3, spec) == derive_seed(3, "noise", "gaussian", [0.1], 2, {})
    assert noise_seed(3, spec) != noise_seed(3, SimpleNamespace(**{**vars(spec), "draws": 3}))


# ------------------------------------------------------------------------------------------------- planning
def test_plan_attacks_order_labels_norms_and_layers():
    specs = cfg_of(attacks=[{"attack": "pgd", "norms": ["l2"]}, "fgsm"]).labelled_attacks(10)
    assert [p.label for p in plan_attacks(specs, "linf", ["r"])] == ["fgsm", "transfer"]
    both = plan_attacks(specs, "l2", ["r", "s"])
    assert [(p.label, p.source) for p in both] == [("pgd", None), ("fgsm", None), ("transfer(r)", "r"),
                                                    ("transfer(s)", "s")]
    assert plan_attacks(specs, "l2", [], {"pgd": {"g": 1}})[0].layers == {"g": 1}


def test_a_configured_transfer_label_clashes_with_the_transfer_attack():
    specs = EvalConfig.from_dict({"dataset": "toy", "threats": [{"norm": "linf", "epsilons": [0.1]}],
                                  "attacks": [{"attack": "pgd", "label": "transfer"}]}).labelled_attacks(10)
    with pytest.raises(ConfigError, match="^attacks: label 'transfer' is used by a configured attack and a transfer "
                                          "attack; rename the configured one$"):
        plan_attacks(specs, "linf", ["r"])


def test_planned_settings_cap_by_classes_and_skip_a_disabled_sanity_attack():
    cfg = cfg_of(attacks=[{"attack": "apgd-t", "params": {"steps": 2, "n_target_classes": 9}}],
                 diagnostics={"enabled": False, "sanity": SANITY})
    settings = planned_settings(cfg, 4, {})
    assert list(settings) == ["apgd-t"] and settings["apgd-t"]["n_target_classes"] == 3  # at most classes - 1


def test_planned_settings_check_the_transfer_attack_against_the_classes():
    cfg = cfg_of(transfer={"attack": "apgd-dlr", "params": {"steps": 2}})
    source = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="transfer"):
        planned_settings(cfg, 2, {"relu": source})
    settings = planned_settings(cfg, 3, {"relu": source})
    assert (settings["transfer"]["inner"]["attack"], settings["transfer"]["inner"]["steps"]) == ("apgd-dlr", 2)


# ------------------------------------------------------------------------------------------------- randomness
def test_expected_robust_accuracy_hand_worked():
    # worst per sample: max(0, .5) = .5; max(.2, .1) = .2; clean None (wrong) = 1.0 -> correct .5, .8, 0
    mean, se = expected_robust_accuracy([0.0, 0.2, None], [[0.5, None, 0.1], [None, 0.1, 0.3]])
    assert mean == pytest.approx(1.3 / 3)
    assert se == pytest.approx(math.sqrt((0.5 - 1.3 / 3) ** 2 + (0.8 - 1.3 / 3) ** 2 + (1.3 / 3) ** 2) / math.sqrt(6))
    assert expected_robust_accuracy([0.25], [[None]]) == (0.75, 0.0)
    assert expected_robust_accuracy([0.1, 0.2], [[0.3]]) is None
    assert expected_robust_accuracy([], []) is None


class Scripted(nn.Module):
    """Answers its k-th call with ``outputs[k]`` (a model whose randomness no seed controls)."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs, self.calls = outputs, 0

    def forward(self, x):
        self.calls += 1
        return torch.tensor(self.outputs[self.calls - 1]).expand(len(x), -1)


class Noisy(nn.Module):
    def __init__(self, scale: float, sigma: float):
        super().__init__()
        self.scale, self.sigma = scale, sigma

    def forward(self, x):
        return self.scale + self.sigma * torch.randn(len(x), 3)


def test_probe_of_a_seeded_random_model_and_the_draws_setting():
    x = torch.zeros(4, 2)
    found = probe_randomness(Noisy(0.0, 1.0), x, 0)
    assert (found.randomized, found.seedable, found.draws) == (True, True, 11) and found.max_output_diff > 0
    assert probe_randomness(Noisy(0.0, 1.0), x, 0, setting=3).draws == 3
    assert found.to_dict()["common_draws"] is True
    assert "common_draws" not in Randomness(False, True, 0.0, 1).to_dict()


def test_probe_scale_is_the_largest_output_magnitude():
    # noise 1e-4 on outputs of 100: above rtol (1e-5) itself, below rtol times 100, so not randomized
    found = probe_randomness(Noisy(100.0, 1e-4), torch.zeros(4, 2), 0)
    assert not found.randomized and found.draws == 1


def test_probe_of_an_unseedable_model_reports_the_largest_difference():
    found = probe_randomness(Scripted([[0.0], [5.0], [4.0]]), torch.zeros(2, 2), 0)
    assert (found.randomized, found.seedable, found.max_output_diff) == (True, False, 5.0)
    exact = probe_randomness(Scripted([[1.0], [1.0], [1.0]]), torch.zeros(2, 2), 0, rtol=0.0)
    assert (exact.randomized, exact.seedable, exact.max_output_diff) == (False, True, 0.0)


def test_probe_uses_another_seed_for_the_third_run():
    calls = []

    class Recording(nn.Module):
        def forward(self, x):
            calls.append(torch.initial_seed())
            return torch.zeros(len(x), 2)

    probe_randomness(Recording(), torch.zeros(1, 1), 40)
    assert calls == [40, 40, 41]


def test_equal_non_finite_outputs_are_no_difference():
    nan, inf = float("nan"), float("inf")
    assert _largest_difference(torch.tensor([nan, 1.0]), torch.tensor([nan, 1.5])) == 0.5
    assert _largest_difference(torch.tensor([inf]), torch.tensor([inf])) == 0.0
    assert _largest_difference(torch.tensor([inf]), torch.tensor([-inf])) == torch.finfo(torch.float64).max


def test_log_randomness_warns_only_where_it_must(caplog):
    with caplog.at_level(logging.INFO, logger="kwta_robust.randomness"):
        log_randomness(Randomness(True, True, 0.5, 11))
    assert [r.levelno for r in caplog.records] == [logging.INFO] and "plurality of 11 draws" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kwta_robust.randomness"):
        log_randomness(Randomness(True, False, 0.5, 1))
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert "cannot seed" in caplog.records[0].getMessage() and "verdict_draws is 1" in caplog.records[1].getMessage()


def record_with(randomness=None, results=True):
    rec = make_record([make_result("pgd", [1, 0, 1])]) if results else make_record(n=3)
    if randomness is not None:
        rec.provenance["randomness"] = randomness
    return rec


def test_resume_conflicts():
    deterministic = Randomness(False, True, 0.0, 1)
    assert resume_conflict(record_with(), deterministic) is None  # no randomness recorded: 1 draw, no conflict
    assert resume_conflict(record_with(results=False), Randomness(True, True, 1.0, 11)) == \
        "took 1 draw per verdict and this run takes 11 (verdict_draws)"  # clean verdicts alone count
    old = {"randomized": True, "seedable": True, "draws": 11}
    assert resume_conflict(record_with(old), Randomness(True, True, 1.0, 11)) == DREW_AFRESH
    assert resume_conflict(record_with({**old, "common_draws": True}), Randomness(True, True, 1.0, 11)) is None
    empty = record_with(results=False)
    empty.clean_flags = []
    assert resume_conflict(empty, Randomness(True, True, 1.0, 11)) is None


def test_record_randomness_readers():
    assert record_draws(record_with()) == 1 and record_draws(record_with({"randomized": False})) == 1
    assert unseeded_cause(record_with({"randomized": True})) == ""  # seedable unless recorded otherwise
    assert "cannot seed" in unseeded_cause(record_with({"randomized": True, "seedable": False}))
    assert drew_afresh(record_with({"randomized": True})) is True
    assert drew_afresh(record_with({"randomized": True, "common_draws": True})) is False
