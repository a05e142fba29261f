"""Pins of the masking diagnostics' docstrings (kwta_robust/diagnostics*.py, probe_checks.py, bpda_checks.py,
budget_check.py, randomness.py): each flag's trigger and severity on a tiny case and a near miss."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from eval_helpers import make_record, make_result
from kwta_robust.budget_check import plan_reruns, scale_budget, strongest_by_family
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.diagnostics import Thresholds, run_checks
from kwta_robust.diagnostics_base import checked_flags
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.randomness import AUTO_DRAWS, probe_randomness
from kwta_robust.specs import BudgetCheckSpec
from test_probe_checks import Net, NoisyInput

SATURATED = {"n": 10, "ce_grad_zero_fraction": 0.5, "max_abs_output": 1e4}
GATE = {"layers": [{"name": "k", "module_class": "KWTA", "kinds": ["gate"], "evidence": {}}], "probed": 3}


def flags(record, code: str) -> list:
    return run_checks(record, codes=[code])


# -- saturated-softmax: "Critical when every gradient attack of the record climbs cross-entropy" ----------------
def test_an_eot_alone_on_a_saturated_softmax_is_a_gradient_attack_climbing_cross_entropy() -> None:
    """EOT follows the model's gradient (``loss: ce`` by default); before, the check counted only the kinds
    white-box and bpda, so an EOT-only record read "no gradient attack of this record follows it" (a warning)."""
    eot = make_result("eot", [1] * 10, kind="adaptive")
    [flag] = flags(make_record([eot], probes=SATURATED), "saturated-softmax")
    assert flag.severity == "critical" and flag.evidence["cross_entropy_attacks"] == ["eot"]
    assert "no gradient attack of this record" not in flag.message and "(eot) stand still" in flag.message
    # near misses: gradient estimation follows no gradient (a warning), an EOT on the margin is another objective
    ge = make_result("gradient-estimation", [1] * 10, kind="adaptive")
    [flag] = flags(make_record([ge], probes=SATURATED), "saturated-softmax")
    assert flag.severity == "warning" and flag.evidence["other_gradient_attacks"] == []
    margin = make_result("eot", [1] * 10, kind="adaptive", params={"loss": "margin"})
    [flag] = flags(make_record([margin], probes=SATURATED), "saturated-softmax")
    assert flag.severity == "warning" and flag.evidence["other_gradient_attacks"] == ["eot"]


def test_an_eot_only_evaluation_of_a_scaled_up_model_flags_the_saturation_critical() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(8, 1, 3, 4, generator=gen)
    model = Net(1e4)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    cfg = EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
        "attacks": [{"attack": "eot", "params": {"steps": 2, "eot_samples": 2}}],
        "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}}})
    record = evaluate(model, TensorData(x, y, "toy", 3, torch.arange(8)), cfg, {}, progress=False)
    assert {f.code: f.severity for f in record.diagnostics}.get("saturated-softmax") == "critical"


# -- adaptive-beats-pgd: BPDA, EOT or gradient estimation (kinds bpda, adaptive) against iterative white-box --------
@pytest.mark.parametrize("kills, flagged", [(2, True), (1, False)])
def test_an_eot_beating_pgd_is_an_adaptive_attack(kills: int, flagged: bool) -> None:
    eot = make_result("eot", [0] * kills + [1] * (10 - kills), kind="adaptive", position=1)
    found = flags(make_record([make_result("pgd", [1] * 10), eot]), "adaptive-beats-pgd")
    assert [(f.severity, f.evidence["attack"], f.evidence["reference"]) for f in found] == \
        ([("critical", "eot", "pgd")] if flagged else [])


# -- piecewise-constant-layers: critical where no BPDA acted on the layer, a warning where one did ------------------
def test_piecewise_constant_layers_are_flagged_whether_or_not_bpda_acted_on_them() -> None:
    det = {"layers": [{"name": "q", "module_class": "Round", "kinds": ["piecewise-constant"], "evidence": {}}]}
    bpda = make_result("bpda", [1] * 10, kind="bpda", bpda_layers={"q": {}})
    [acted] = flags(make_record([bpda], detection=det), "piecewise-constant-layers")
    [plain] = flags(make_record([make_result("pgd", [1] * 10)], detection=det), "piecewise-constant-layers")
    assert (acted.severity, acted.evidence["missed_by_bpda"]) == ("warning", [])
    assert (plain.severity, plain.evidence["missed_by_bpda"]) == ("critical", ["q"])
    assert flags(make_record([make_result("pgd", [1] * 10)]), "piecewise-constant-layers") == []


# -- gates-without-bpda: critical; a warning when a gradient-free attack ran; EOT and a transfer are none ---------
@pytest.mark.parametrize("second, severity", [(None, "critical"), (("square", "black-box"), "warning"),
                                              (("transfer", "transfer"), "critical"), (("eot", "adaptive"), "critical"),
                                              (("gradient-estimation", "adaptive"), "warning")])
def test_gates_without_bpda_drop_to_a_warning_only_beside_a_gradient_free_attack(second, severity: str) -> None:
    results = [make_result("pgd", [1] * 10)]
    if second:
        results.append(make_result(second[0], [1] * 10, kind=second[1], position=1))
    [flag] = flags(make_record(results, detection=GATE), "gates-without-bpda")
    assert flag.severity == severity and flag.evidence["missed_by_bpda"] == ["k"]
    assert flag.evidence["gradient_free"] == ([second[0]] if severity == "warning" else [])


def test_gates_without_bpda_stay_silent_without_results_or_when_bpda_acted_on_them() -> None:
    assert flags(make_record([], detection=GATE), "gates-without-bpda") == []
    bpda = make_result("bpda", [1] * 10, kind="bpda", bpda_layers={"k": {}})
    assert flags(make_record([bpda], detection=GATE), "gates-without-bpda") == []


# -- bpda-straight-through: smooth or identity surrogates only; critical on a mapping module ----------------------
def _through(masks_input: bool, relaxed: int) -> dict:
    return {"straight_through": {"m": {"calls": 2, "relaxed_calls": relaxed, "masks_input": masks_input,
                                       "module_class": "Lin", "parameters": 5}}}


@pytest.mark.parametrize("surrogate, masks, relaxed, expected", [
    ("smooth", False, 0, "critical"), ("identity", False, 2, "critical"), ("learned", False, 0, None),
    ("smooth", True, 1, "warning"), ("identity", True, 0, None), ("smooth", False, 2, None)])
def test_bpda_straight_through_severity(surrogate: str, masks: bool, relaxed: int, expected: str | None) -> None:
    bpda = make_result("bpda", [1] * 10, kind="bpda", bpda_layers={"m": {}}, params={"surrogate": surrogate})
    found = flags(make_record([bpda], detection=_through(masks, relaxed)), "bpda-straight-through")
    assert [f.severity for f in found] == ([expected] if expected else [])


# -- unranked-gates: a warning where a smooth BPDA acted on a gate no score ranks (under 0.5) -----------------------
@pytest.mark.parametrize("best, surrogate, flagged", [(0.4, "smooth", True), (0.5, "smooth", False),
                                                      (0.4, "learned", False)])
def test_unranked_gates_trigger(best: float, surrogate: str, flagged: bool) -> None:
    gate = {"name": "g", "module_class": "G", "kinds": ["gate"], "evidence": {
        "ordered_fraction": 0.3, "magnitude_ordered_fraction": best, "smallest_ordered_fraction": 0.1}}
    bpda = make_result("bpda", [1] * 10, kind="bpda", bpda_layers={"g": {}}, params={"surrogate": surrogate})
    found = flags(make_record([bpda], detection={"layers": [gate]}), "unranked-gates")
    assert [f.severity for f in found] == (["warning"] if flagged else [])


# -- non-finite-logits: only with one forward pass per verdict ----------------------------------------------------
def test_non_finite_logits_are_read_from_one_draw_records_only() -> None:
    result = dataclasses.replace(make_result("pgd", [0, 1, 1, 1]), margins=[None, -1.0, -1.0, -1.0])
    [flag] = flags(make_record([result]), "non-finite-logits")
    assert flag.severity == "warning" and flag.evidence["attacks"][0]["inputs"] == 1
    record = make_record([result])
    record.provenance["randomness"] = {"randomized": True, "seedable": True, "max_output_diff": 1.0, "draws": 11}
    assert flags(record, "non-finite-logits") == []


# -- checked_flags: a plug-in's bug is named in one line; the harness's own errors pass through as they are ------
def test_checked_flags_names_a_foreign_error_and_passes_the_harness_own_through() -> None:
    def broken(record, thr):
        raise ZeroDivisionError("x")

    def refusing(record, thr):
        raise ConfigError("its own line")

    record = make_record([make_result("pgd", [1] * 4)])
    with pytest.raises(ConfigError, match="diagnostics: check 'mine' raised ZeroDivisionError: x"):
        checked_flags("mine", broken, record, Thresholds())
    with pytest.raises(ConfigError) as caught:
        checked_flags("mine", refusing, record, Thresholds())
    assert str(caught.value) == "its own line"


# -- budget check: which attacks it re-runs, at which budget ------------------------------------------------------
def test_budget_check_reruns_the_strongest_of_the_strongest_families_and_skips_single_step_and_transfer() -> None:
    results = [make_result("fgsm", [0] * 10 + [1] * 10, single_step=True),
               make_result("pgd", [-1] * 10 + [0] * 2 + [1] * 8, position=1, params={"steps": 10}),
               make_result("square", [-1] * 12 + [0] + [1] * 7, kind="black-box", position=2),
               make_result("transfer", [-1] * 13 + [0] * 5 + [1] * 2, kind="transfer", position=3),
               make_result("bpda", [-1] * 18 + [0] + [1], kind="bpda", position=4)]
    assert [r.label for r in strongest_by_family(results, 2)] == ["bpda", "pgd"]  # 1/2, 2/10; square 1/8 third
    [(_, _, runs, skipped)] = plan_reruns(make_record(results), BudgetCheckSpec(), 0)
    assert [(p.result.label, p.params) for p in runs] == [("bpda", {"inner_params": {"steps": 120}}),
                                                          ("pgd", {"steps": 30})] and skipped == []
    only = make_record([make_result("fgsm", [0, 0] + [1] * 8, single_step=True),
                        make_result("transfer", [-1, -1, 0] + [1] * 7, kind="transfer", position=1)])
    assert plan_reruns(only, BudgetCheckSpec(), 0)[0][2:] == \
        ([], ["every attack here: none has a budget to raise (single-step or transfer)"])
    assert scale_budget("bpda", {"stage_steps": [10, 20]}, 3) == {"stage_steps": [30, 60]}
    assert scale_budget("gradient-estimation", {}, 3) == {"samples_start": 60, "samples_end": 600}
    assert scale_budget("hopskipjump", {"max_queries": 100}, 3)["max_queries"] == 300
    assert scale_budget("fgsm", {}, 3) is None


# -- randomness probe: randomized between seeds, unseedable under one seed ----------------------------------------
def test_the_randomness_probe_tells_seeded_from_unseedable_randomness() -> None:
    class OwnGenerator(Net):
        def __init__(self) -> None:
            super().__init__()
            self.gen = torch.Generator().manual_seed(5)

        def forward(self, x):
            return self.fc((x + 0.3 * torch.randn(x.shape, generator=self.gen)).flatten(1))

    x = torch.rand(8, 1, 3, 4, generator=torch.Generator().manual_seed(0))
    plain, noisy, own = (probe_randomness(m, x, 0) for m in (Net(), NoisyInput(), OwnGenerator()))
    assert (plain.randomized, plain.seedable, plain.draws) == (False, True, 1)
    assert (noisy.randomized, noisy.seedable, noisy.draws) == (True, True, AUTO_DRAWS)
    assert (own.randomized, own.seedable) == (True, False)
    assert probe_randomness(NoisyInput(), x, 0, setting=5).draws == 5
