"""Fuzz round on the gradient-masking diagnostics at run time: a flag that says an attack broke samples needs at
least one broken sample whatever ``min_count`` says, and a fraction threshold written as a percentage is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eval_helpers import make_record, make_result
from kwta_robust.budget_check import PlannedRerun, floor_samples, judge
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.diagnostics import Thresholds, run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.specs import BudgetCheckSpec

ZERO = Thresholds(min_count=0, wide_margin=0.0, single_step_margin=0.0, ladder_margin=0.0)
BASE = {"dataset": "toy", "batch_size": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.01]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 2, "step_size": 0.001}}]}


def _same(label: str, flags: list[int], **kw) -> object:
    return make_result(label, flags, **kw)


def test_no_beats_flag_on_zero_broken_samples_at_zero_thresholds() -> None:
    pgd = _same("pgd", [1] * 8 + [0] * 2)
    bpda = _same("bpda", [1] * 8 + [0] * 2, kind="bpda", position=1)
    fgsm = _same("fgsm", [1] * 8 + [0] * 2, single_step=True, position=2)
    square = _same("square", [1] * 8 + [0] * 2, kind="black-box", position=3)
    assert run_checks(make_record([pgd, bpda, fgsm, square]), ZERO) == []
    # one sample broken among pgd's survivors is a flag at these thresholds, quoting 1 of the 8 (10.0% of all 10)
    one = _same("bpda", [1] * 7 + [0] * 3, kind="bpda", position=1)
    flag, = run_checks(make_record([pgd, one]), ZERO)
    assert flag.code == "adaptive-beats-pgd" and flag.severity == "critical"
    assert "bpda broke 1 of the 8 samples pgd left robust (10.0% of all 10;" in flag.message
    assert flag.evidence["points"][0]["broken_among_survivors"] == 1


def test_no_ladder_flag_on_zero_broken_samples_nor_a_division_by_zero_on_no_samples() -> None:
    small = _same("pgd-10", [1] * 8 + [0] * 2, attack="pgd", params={"steps": 10})
    large = _same("pgd-100", [1] * 8 + [0] * 2, attack="pgd", params={"steps": 100}, position=1)
    assert run_checks(make_record([small, large]), ZERO) == []
    empty = [_same("pgd-10", [], attack="pgd", params={"steps": 10}),
             _same("pgd-100", [], attack="pgd", params={"steps": 100}, position=1)]
    assert run_checks(make_record(empty, n=0), ZERO) == []
    broke = _same("pgd-100", [1] * 7 + [0] * 3, attack="pgd", params={"steps": 100}, position=1)
    flag, = run_checks(make_record([small, broke]), ZERO)
    assert flag.code == "budget-still-lowering" and flag.evidence["broken"] == 1 and flag.evidence["n"] == 10


def test_the_budget_check_needs_a_kill_and_samples_at_least_four_survivors_at_zero_thresholds() -> None:
    assert floor_samples(BudgetCheckSpec(), ZERO, 100) == 4  # four times the one kill a flag needs
    record = make_record([_same("pgd", [1] * 10, params={"steps": 10})])
    plan = PlannedRerun(record.results[0], {"steps": 30}, 10, [0, 1, 2, 3], 40.0, [0, 1, 2], 4)
    flag = judge(plan, [], 40, 10, 0, 3, ZERO)
    assert flag.code == "budget-checked" and flag.severity == "info" and not flag.evidence["flagged"]
    flag = judge(plan, [0], 40, 10, 0, 3, ZERO)
    assert flag.code == "budget-still-lowering" and flag.evidence["broken"] == 1


def _tiny_run(tmp_path, thresholds: dict):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    cfg = EvalConfig.from_dict({**BASE, "diagnostics": {"gradient_batch": 4, "thresholds": thresholds}})
    return evaluate(model, TensorData(x, y, "toy", 3, torch.arange(12)), cfg, {"name": "tiny"},
                    out_path=tmp_path / "r.json", progress=False)


def test_end_to_end_zero_thresholds_raise_no_flag_on_a_run_that_broke_nothing(tmp_path) -> None:
    record = _tiny_run(tmp_path, {"min_count": 0, "ladder_margin": 0})
    assert record.results[0].n_broken == 0  # two steps of 0.001 break nothing on this linear model
    assert [f.code for f in record.diagnostics] == ["sanity-not-run", "budget-checked"]  # BASE has no sanity attack
    assert record.diagnostics[1].evidence["broken"] == 0 and record.diagnostics[1].evidence["sampled"] == 4


@pytest.mark.parametrize("key", ["wide_margin", "single_step_margin", "ladder_margin", "eps_monotonic_tolerance",
                                 "large_eps_max_accuracy", "zero_gradient_fraction"])
@pytest.mark.parametrize("value", [1.5, 5, 1e30])
def test_a_fraction_threshold_above_one_is_refused_naming_it(key: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict({**BASE, "diagnostics": {"thresholds": {key: value}}})
    assert str(info.value) == (f"diagnostics.thresholds.{key}: must be a fraction from 0 to 1 (5% is 0.05), got "
                               f"{value:g}")


@pytest.mark.parametrize("key", ["wide_margin", "ladder_margin", "large_eps_max_accuracy", "zero_gradient_fraction"])
def test_a_fraction_threshold_of_exactly_one_is_accepted(key: str) -> None:
    cfg = EvalConfig.from_dict({**BASE, "diagnostics": {"thresholds": {key: 1}}})
    assert getattr(cfg.diagnostics.thresholds, key) == 1.0


def test_a_thresholds_object_is_checked_as_a_mapping_is() -> None:
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict({**BASE, "diagnostics": {"thresholds": Thresholds(ladder_margin=2.0)}})
    assert "diagnostics.thresholds.ladder_margin: must be a fraction from 0 to 1" in str(info.value)
    with pytest.raises(ConfigError, match=r"diagnostics\.thresholds\.min_count: must be >= 0, got -1"):
        EvalConfig.from_dict({**BASE, "diagnostics": {"thresholds": Thresholds(min_count=-1)}})


def _beaten() -> object:
    return make_record([_same("pgd", [1] * 8 + [0] * 2), _same("bpda", [1] * 5 + [0] * 5, kind="bpda", position=1)])


@pytest.mark.parametrize("kwargs, message", [
    ({"codes": "adaptive-beats-pgd"},
     "run_checks: codes: expected a list of check codes or None, got str; e.g. ['adaptive-beats-pgd']"),
    ({"codes": 5}, "run_checks: codes: expected a list of check codes or None, got int; e.g. ['adaptive-beats-pgd']"),
    ({"codes": ["adaptive-beats-pgd", "adaptive-beats-pgd"]},
     "run_checks: codes: 'adaptive-beats-pgd' is listed twice (its flags would appear twice); list it once"),
    ({"thresholds": {"wide_margin": 0.1}},
     "run_checks: thresholds: expected a kwta_robust.diagnostics.Thresholds or None, got dict"),
])
def test_run_checks_names_a_bad_argument_of_its_caller_not_a_check(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_checks(_beaten(), **kwargs)
    assert str(info.value) == message


def test_run_checks_names_a_record_of_another_type() -> None:
    with pytest.raises(ConfigError) as info:
        run_checks({"results": []})
    assert str(info.value) == "run_checks: record: expected a kwta_robust.results.EvalRecord, got dict"


def test_run_checks_takes_any_iterable_of_codes_once_each() -> None:
    flags = run_checks(_beaten(), None, (c for c in ["adaptive-beats-pgd", "eps-not-monotonic"]))
    assert [f.code for f in flags] == ["adaptive-beats-pgd"]
    assert flags[0].evidence["points"][0]["broken_among_survivors"] == 3  # samples 5, 6, 7


def test_batch_statistics_are_flagged_when_one_probed_sample_cannot_measure_them(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten(),
                          nn.Linear(32, 3)).eval()
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    cfg = EvalConfig.from_dict({**BASE, "diagnostics": {"gradient_batch": 1, "budget_check": {"enabled": False}}})
    record = evaluate(model, TensorData(x, y, "toy", 3, torch.arange(8)), cfg, {"name": "bn"},
                      out_path=tmp_path / "r.json", progress=False)
    assert record.probes["n"] == 1 and record.probes["batch_half"] is None
    flag, = [f for f in record.diagnostics if f.code == "batch-dependent"]
    assert flag.severity == "critical" and flag.evidence["batch_statistics_layers"] == ["1"]
    assert flag.message.startswith("1 normalize with batch statistics in eval mode (track_running_stats=False)")
    assert "not measured: the probe batch had 1 sample(s)" in flag.message


def test_unmeasured_batch_dependence_without_batch_statistics_layers_is_silent() -> None:
    probes = {"n": 1, "batch_half": None, "batch_max_output_diff": None, "batch_prediction_changes": None,
              "batch_statistics_layers": []}
    assert [f.code for f in run_checks(make_record([_same("pgd", [1] * 4)], probes=probes))] == []


@pytest.mark.parametrize("small, large", [
    ({}, {"steps": 100}),  # pgd's default 40 steps against 100
    ({"steps": 10}, {"steps": 10, "restarts": 5}),  # 1 restart by default against 5
    ({"inner": "pgd"}, {"inner": "pgd", "inner_params": {"steps": 400}}),  # bpda: its inner pgd's 40 against 400
])
def test_a_budget_left_at_its_default_is_a_rung_of_the_ladder(small: dict, large: dict) -> None:
    attack = "bpda" if "inner" in small else "pgd"
    first = _same("a", [1] * 10, attack=attack, params=small)
    second = _same("b", [1] * 6 + [0] * 4, attack=attack, params=large, position=1)
    flag, = [f for f in run_checks(make_record([first, second])) if f.code == "budget-still-lowering"]
    assert flag.severity == "warning"
    assert flag.evidence == {"smaller": "a", "larger": "b", "norm": "linf", "eps": 0.3, "broken": 4, "n": 10}
    assert flag.message.startswith("at Linf 0.3 b broke 4 of the 10 samples a left robust (40.0% of all 10; "
                                   "100.0% → 60.0%)")
    # the other way round (the default the larger budget) or the default written out is no ladder
    assert [f.code for f in run_checks(make_record([_same("a", [1] * 10, attack=attack, params=large),
                                                    _same("b", [1] * 6 + [0] * 4, attack=attack, params=small,
                                                          position=1)]))] == []
    assert [f.code for f in run_checks(make_record([_same("a", [1] * 10, params={}),
                                                    _same("b", [1] * 6 + [0] * 4, params={"steps": 40},
                                                          position=1)]))] == []
