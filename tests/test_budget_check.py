"""The budget check on the user's run (kwta_robust/budget_check.py): budget scaling, which attacks it re-runs, the
verdict with its exact lower bound on synthetic records, its config, and end to end on a tiny kWTA model (seeded,
switchable, headline untouched)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import pytest
import torch
from torch import nn

from attacks.base import NORMS, REGISTRY, AttackInfo, create_attack
from eval_helpers import make_record, make_result
from kwta_robust.budget_check import (PlannedRerun, by_closeness, closest_approach, floor_samples, judge, plan_reruns,
                                      run_budget_check, scale_budget, split_sample, strongest_by_family)
from kwta_robust.budget_scale import cap_budget
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.diagnostics import Thresholds
from kwta_robust.rerun_jobs import run_rerun_batch
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.layers import KWTA
from kwta_robust.samples import select_samples
from kwta_robust.specs import BudgetCheckSpec

N = 20


class _StepsWithoutDefault:
    """A plug-in attack whose ``steps`` has no default: the budget check scales the value given."""

    def __init__(self, steps: int, seed: int = 0) -> None:
        self.steps, self.seed = steps, seed

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat) -> torch.Tensor:
        return x.clone()


def test_scale_budget_scales_a_given_steps_that_has_no_default() -> None:
    """The given value is scaled without looking up a default the factory does not have (a KeyError before)."""
    with REGISTRY.temporarily("no-default-steps", AttackInfo("no-default-steps", _StepsWithoutDefault, NORMS,
                                                             "white-box")):
        assert scale_budget("no-default-steps", {"steps": 7}, 3) == {"steps": 21}
        assert scale_budget("no-default-steps", {}, 3) is None  # nothing to scale: the check skips the attack


def test_scale_budget_multiplies_the_budget_knob_of_each_family() -> None:
    assert scale_budget("pgd", {"steps": 40, "loss": "ce"}, 4) == {"steps": 160, "loss": "ce"}
    assert scale_budget("apgd-ce", {}, 3) == {"steps": 300}  # the default budget, scaled
    assert scale_budget("square", {"n_queries": 1000, "p_init": 0.8}, 2) == {"n_queries": 2000, "p_init": 0.8}
    bpda = scale_budget("bpda", {"surrogate": "smooth", "inner_params": {"steps": 40}}, 4)
    assert bpda == {"surrogate": "smooth", "inner_params": {"steps": 160}}
    assert scale_budget("gradient-estimation", {"steps": 10}, 2) == {"steps": 10, "samples_start": 40,
                                                                      "samples_end": 400}
    staged = scale_budget("gradient-estimation", {"samples_schedule": [[5, 2], [10, 8]]}, 3)
    assert staged["samples_schedule"] == [[5, 6], [10, 24]]
    staged_bpda = scale_budget("bpda", {"temperature_schedule": [0.1, 0.03], "stage_steps": [10, 50]}, 3)
    assert staged_bpda == {"temperature_schedule": [0.1, 0.03], "stage_steps": [30, 150]}
    assert scale_budget("fgsm", {}, 4) is None
    assert scale_budget("hopskipjump", {"steps": 8, "max_queries": 1000}, 3) == {"steps": 24, "max_queries": 3000}
    assert scale_budget("boundary", {"max_queries": None}, 2) == {"max_queries": None, "steps": 50000}
    original = {"inner_params": {"steps": 40}}
    scale_budget("bpda", original, 4)
    assert original == {"inner_params": {"steps": 40}}  # the record's parameters are not touched


def test_cap_budget_caps_every_budget_knob_and_builds_the_attack() -> None:
    assert cap_budget("pgd", {"steps": 40, "loss": "ce"}, 5) == {"steps": 5, "loss": "ce"}
    assert cap_budget("pgd", {"steps": 3}, 5) == {"steps": 3}  # never raised
    assert cap_budget("apgd-t", {}, 2) == {"steps": 2, "n_target_classes": 2}  # defaults capped too
    assert cap_budget("square", {"n_queries": 5000}, 3) == {"n_queries": 6}
    assert cap_budget("square", {"n_queries": 5000}, 3, queries=10) == {"n_queries": 10}
    assert cap_budget("fgsm", {"eps_step": 0.1}, 2) == {"eps_step": 0.1}  # no budget
    ge = cap_budget("gradient-estimation", {"samples_schedule": [[10, 20], [50, 100]]}, 4)
    assert ge["samples_schedule"] == [[1, 4], [2, 4]] and ge["steps"] == 4
    staged = {"surrogate": "smooth", "inner": "apgd-ce", "temperature_schedule": [0.05, 0.03],
              "stage_steps": [100, 500]}
    capped = cap_budget("bpda", staged, 2)
    assert capped["stage_steps"] == [2, 2] and "steps" not in capped["inner_params"]
    assert staged["stage_steps"] == [100, 500]  # the given parameters are not touched
    split = cap_budget("bpda", {"inner_params": {"steps": 100}, "temperature_schedule": [1.0, 0.3, 0.1]}, 1)
    assert split["inner_params"]["steps"] == 3  # one step per temperature stage
    learned = cap_budget("bpda", {"surrogate": "learned"}, 3)
    assert learned["fit_steps"] == 15 and learned["distill_steps"] == 15 and learned["inner_params"] == {"steps": 3}
    for attack, params in (("bpda", capped), ("bpda", split), ("gradient-estimation", ge), ("apgd-t", {"steps": 2})):
        create_attack(attack, **params)  # every capped budget still builds its attack


def _cascade() -> list:
    pgd = make_result("pgd", [0] * 8 + [1] * 12, params={"steps": 40}, eps=0.1)
    fgsm = make_result("fgsm", [-1] * 8 + [1] * 12, single_step=True, position=1, cumulative=True, eps=0.1)
    bpda = make_result("bpda-smooth", [-1] * 8 + [0] * 6 + [1] * 6, attack="bpda", kind="bpda", position=2,
                       cumulative=True, params={"surrogate": "smooth", "inner_params": {"steps": 40}}, eps=0.1)
    ge = make_result("gradient-estimation", [-1] * 14 + [0] + [1] * 5, kind="adaptive", position=3, cumulative=True,
                     params={"steps": 10}, eps=0.1)
    for r, q in zip((pgd, fgsm, bpda, ge), (1600, 12, 480, 4000)):
        r.queries = q
    return [pgd, fgsm, bpda, ge]


def test_the_strongest_attack_of_each_strongest_family_is_chosen() -> None:
    results = _cascade()
    # bpda-smooth broke 6 of the 12 pgd left (50%), pgd 8 of 20 (40%): in a cascade the rate, not the count, decides
    assert [r.label for r in strongest_by_family(results, 2)] == ["bpda-smooth", "pgd"]
    assert [r.label for r in strongest_by_family(results, 5)] == ["bpda-smooth", "pgd", "gradient-estimation"]


def test_plan_samples_survivors_seeded_and_within_the_cost_cap() -> None:
    record = make_record(_cascade())
    survivors = [15, 16, 17, 18, 19]
    spec = BudgetCheckSpec(samples=5, min_samples=2, factor=4, attacks=2, max_cost=1.0)
    (norm, eps, runs, skipped), = plan_reruns(record, spec, seed=0)
    assert (norm, eps, skipped) == ("linf", 0.1, [])
    assert [p.result.label for p in runs] == ["bpda-smooth", "pgd"]
    for p in runs:
        assert p.sampled == survivors and p.survivors == 5  # room for every survivor
    assert runs[0].params == {"surrogate": "smooth", "inner_params": {"steps": 160}}
    few = BudgetCheckSpec(samples=3, min_samples=2, factor=4, attacks=2, max_cost=1.0)
    (_, _, runs, _), = plan_reruns(record, few, seed=0)
    assert [p.sampled for p in plan_reruns(record, few, seed=0)[0][2]] == [p.sampled for p in runs]  # seeded
    assert [p.sampled for p in plan_reruns(record, few, seed=1)[0][2]] != [p.sampled for p in runs]
    # 6092 queries spent. Per survivor at 4x: bpda-smooth 4 x 480/6 = 320, pgd 4 x 1600/12 = 533. max_cost 0.05
    # (305) covers not even the floors: both still get min_samples (2)
    cheap = BudgetCheckSpec(samples=5, min_samples=2, factor=4, attacks=2, max_cost=0.05)
    (_, _, runs, _), = plan_reruns(record, cheap, seed=0)
    assert [(len(p.sampled), p.floor) for p in runs] == [(2, 2), (2, 2)]
    assert runs[1].estimated_queries == pytest.approx(2 * 4 * 1600 / 12)
    # beyond the floors (1 each: 853), 0.32 x 6092 = 1949 leaves 1096: 3 more for bpda-smooth (960), none for pgd
    middle = BudgetCheckSpec(samples=5, min_samples=1, factor=4, attacks=2, max_cost=0.32)
    (_, _, runs, _), = plan_reruns(record, middle, seed=0)
    assert [len(p.sampled) for p in runs] == [4, 1]


def test_no_extra_run_at_eps_zero_where_no_input_can_move() -> None:
    at_zero = [dataclasses.replace(r, eps=0.0, eps_text="0") for r in _cascade()]
    record = make_record([*at_zero, *_cascade()])
    spec = BudgetCheckSpec(samples=5, min_samples=2, factor=4, attacks=2, max_cost=1.0)
    assert [(norm, eps) for norm, eps, _, _ in plan_reruns(record, spec, seed=0)] == [("linf", 0.1)]


def test_the_default_floor_is_four_times_the_kills_a_flag_needs() -> None:
    shipped, thresholds = BudgetCheckSpec(), Thresholds()
    assert shipped.min_samples is None  # the default: the rule, not a fixed count
    # ladder_margin 0.02 of n, at least min_count (2) kills; four times that, at most samples (32)
    sizes = (20, 100, 101, 150, 200, 300, 400, 1000)
    assert [floor_samples(shipped, thresholds, n) for n in sizes] == [8, 8, 12, 12, 16, 24, 32, 32]
    assert floor_samples(BudgetCheckSpec(min_samples=5), thresholds, 1000) == 5  # a number is taken as given
    assert floor_samples(BudgetCheckSpec(samples=10), thresholds, 1000) == 10  # never more than samples
    assert floor_samples(shipped, Thresholds(ladder_margin=0.05), 100) == 20  # 5 kills
    assert floor_samples(shipped, Thresholds(min_count=3), 100) == 12
    for n, floor in ((100, 8), (200, 16)):  # the plan takes it: a max_cost that pays for nothing beyond the floor
        pgd = make_result("pgd", [0] * (n - 40) + [1] * 40, params={"steps": 10}, eps=0.1)
        pgd.queries = 10 * n
        (_, _, (run,), _), = plan_reruns(make_record([pgd]), BudgetCheckSpec(max_cost=1e-6), seed=0)
        assert (len(run.sampled), run.survivors, run.floor) == (floor, 40, floor)
        assert judge(run, [], 0, n, 0, 3, Thresholds()).evidence["floor"] == floor  # the record says which floor
        strict = Thresholds(ladder_margin=0.05)
        (_, _, (run,), _), = plan_reruns(make_record([pgd]), BudgetCheckSpec(max_cost=1e-6), 0, strict)
        assert len(run.sampled) == min(32, 4 * round(0.05 * n))


def test_half_the_sample_is_the_survivors_closest_to_the_boundary() -> None:
    record = make_record(_cascade())  # survivors 14..19 (pgd left 12, bpda-smooth broke 6 of them)
    survivors = [14, 15, 16, 17, 18, 19]
    assert by_closeness(record, survivors, "linf", 0.1) == []  # no margins stored (an older record): nothing ranked
    record.clean_margins = [-1.0] * 20
    record.clean_margins[14:20] = [-5.0, -0.5, None, -3.0, -0.5, -0.1]
    # largest margin (closest to misclassification) first, ties to the lower index, a missing margin last
    assert by_closeness(record, survivors, "linf", 0.1) == [19, 15, 18, 17, 14, 16]
    order = [16, 14, 19, 17, 15, 18]  # a "random" permutation
    assert split_sample([19, 15, 18, 17, 14, 16], order, 5, 0.5) == ([15, 19], [14, 15, 16, 17, 19])
    assert split_sample([], order, 3, 0.5) == ([], [14, 16, 19])  # without margins: the first of the permutation
    assert split_sample([19, 15, 18, 17, 14, 16], order, 1, 0.5) == ([], [16])  # one sample: at random
    assert split_sample([19, 15, 18, 17, 14, 16], order, 6, 0.5) == ([15, 18, 19], survivors)  # a census
    # another closest fraction (rounded down): 3 of 4, all of them, none (all at random)
    assert split_sample([19, 15, 18, 17, 14, 16], order, 4, 0.75) == ([15, 18, 19], [15, 16, 18, 19])
    assert split_sample([19, 15, 18, 17, 14, 16], order, 3, 1.0) == ([15, 18, 19], [15, 18, 19])
    assert split_sample([19, 15, 18, 17, 14, 16], order, 3, 0.0) == ([], [14, 16, 19])
    spec = BudgetCheckSpec(samples=4, min_samples=4, factor=4, attacks=2, max_cost=1.0, closest=0.5)
    (_, _, runs, _), = plan_reruns(record, spec, seed=0)
    for p in runs:
        assert p.closest == [15, 19] and set(p.closest) < set(p.sampled) and len(p.sampled) == 4
    for fraction, closest in ((0.75, [15, 18, 19]), (1.0, [15, 17, 18, 19]), (0.0, [])):
        shifted = dataclasses.replace(spec, closest=fraction)
        for p in plan_reruns(record, shifted, seed=0)[0][2]:
            assert p.closest == closest and len(p.sampled) == 4
    # the random part changes with the seed, the closest part does not
    others = {tuple(p.sampled) for s in range(8) for p in plan_reruns(record, spec, seed=s)[0][2]}
    assert len(others) > 1 and all({15, 19} <= set(o) for o in others)


def test_the_closest_are_those_the_attacks_came_closest_to_breaking() -> None:
    record = make_record(_cascade())  # survivors 14..19
    survivors = [14, 15, 16, 17, 18, 19]
    record.clean_margins = [-1.0] * 14 + [-5.0, -0.5, -2.0, -3.0, -0.5, -0.1]
    pgd, _, bpda, ge = record.results
    pgd.margins = [0.5] * 8 + [-2.0] * 12  # every sample attacked: pgd broke 0..7
    bpda.margins = [None] * 8 + [0.3] * 6 + [-4.0, -0.2, -1.5, -0.9, -3.0, -2.5]  # on 8..19, broke 8..13
    ge.margins = [None] * 14 + [1.0, -0.4, -0.6, -0.1, None, -2.2]  # on 14..19, broke 14
    # per sample the largest margin any attack reached there (fgsm stored none: a record written before)
    assert closest_approach(record, "linf", 0.1)[14:] == [1.0, -0.2, -0.6, -0.1, -2.0, -2.0]
    assert closest_approach(record, "linf", 0.3) == [None] * 20  # no attack at that threat point
    # survivors ranked by how close the attacks came, not by the clean margin; ties to the lower index
    assert by_closeness(record, survivors, "linf", 0.1) == [14, 17, 15, 16, 18, 19]
    for r in (pgd, bpda, ge):  # without the survivors' attack margins: the clean margins, as before
        r.margins = []
    assert by_closeness(record, survivors, "linf", 0.1) == [19, 15, 18, 16, 17, 14]


def test_ties_in_margin_go_to_the_larger_error_rate_any_attack_reached() -> None:
    """A randomized model's vote-share margins move in steps of one draw, so many survivors tie: the one whose
    draws were more often wrong under some attack is closer to breaking (ranked first), whatever its index."""
    record = make_record(_cascade())
    survivors = [15, 16, 17, 18, 19]
    pgd, _, _, ge = record.results
    pgd.margins = [0.2] * 15 + [-0.2, -0.2, -0.6, -0.2, None]  # 15, 16 and 18 tie; 19 has no margin (last)
    pgd.error_rates = [None] * 15 + [0.3, 0.4, 0.2, 0.2, None]
    ge.error_rates = [None] * 15 + [0.1, None, 0.1, 0.45, 0.0]  # 18's largest rate came from another attack
    assert by_closeness(record, survivors, "linf", 0.1) == [18, 16, 15, 17, 19]
    ge.error_rates = []  # a deterministic model stores none: ties to the lower index
    pgd.error_rates = []
    assert by_closeness(record, survivors, "linf", 0.1) == [15, 16, 18, 17, 19]


def test_verdict_extrapolates_from_the_random_half_only() -> None:
    thr = Thresholds()
    plan = dataclasses.replace(_plan(8, 50), closest=[0, 1, 2, 3])
    # 3 of the 4 closest and 0 of the 4 random of 50 survivors (n = 100): the 3 kills are certain; the random half
    # broke nothing, so nothing is extrapolated (the lower bound of 0/4 is 0 kills): exactly 3 points, flagged
    flag = judge(plan, [0, 1, 3], 1, n=100, seed=7, factor=4, thresholds=thr)
    ev = flag.evidence
    assert flag.code == "budget-still-lowering" and (ev["broken"], ev["broken_closest"], ev["closest"]) == (3, 3, 4)
    assert ev["drop_lower_bound"] == pytest.approx(0.03) and ev["estimated_drop"] == pytest.approx(0.03)
    assert ev["closest_indices"] == [0, 1, 2, 3]
    assert "the 4 closest to breaking: 3 broken; 4 at random: 0" in flag.message
    # 1 closest + 2 random: the random half's 2/4 is extrapolated to the 46 that are not among the closest, the
    # estimate (1 + 23) / 100; the bound: the 1 closest plus the exact 97.5% lower bound of the kills among those 46
    # (2 of 4 drawn: at least 4, P(X >= 2 | 3 of 46) = 0.0169 is under 0.025), (1 + 4) / 100
    mixed = judge(plan, [2, 5, 7], 1, n=100, seed=7, factor=4, thresholds=thr).evidence
    assert mixed["estimated_drop"] == pytest.approx(0.24)
    assert mixed["drop_lower_bound"] == pytest.approx((1 + 4) / 100, abs=1e-15)
    # the same kills read as one random sample of 8 (an older record) extrapolate all of them
    flat = judge(_plan(8, 50), [2, 5, 7], 1, n=100, seed=7, factor=4, thresholds=thr).evidence
    assert flat["estimated_drop"] == pytest.approx(3 / 8 * 50 / 100) and "closest_indices" in flat


def _plan(sampled: int = 20, survivors: int = 50) -> PlannedRerun:
    r = make_result("bpda-smooth", [1] * 100, attack="bpda", kind="bpda", eps=0.1,
                    params={"inner_params": {"steps": 40}})
    return PlannedRerun(r, {"inner_params": {"steps": 160}}, survivors, list(range(sampled)), 1000.0)


def test_verdict_uses_the_exact_lower_bound_and_the_config_thresholds() -> None:
    thr = Thresholds()
    flag = judge(_plan(), list(range(6)), 3200, n=100, seed=7, factor=4, thresholds=thr)
    # 6 of 20 sampled of 50 survivors: estimate 15 points; the exact 97.5% lower bound of the kills among the 50
    # (6 of 20 drawn without replacement): 8, so 8 points
    assert flag.code == "budget-still-lowering" and flag.severity == "warning"
    assert "bpda-smooth at 4x its budget (inner_params.steps=160) broke 6 of 20 sampled survivors" in flag.message
    assert ">= 8.0 points" in flag.message and "estimate 15.0" in flag.message
    assert "raise bpda-smooth's budget to inner_params.steps=160" in flag.message
    # the bound is rounded down (a lower bound is never printed above itself): 4 of 20 sampled of 50 survivors on 251
    # samples bound the drop at 5 kills, 1.992 points, under the margin of 2.0, which the text says without a
    # "2.0 ... is under ladder_margin (2.0)"
    under = judge(_plan(20, 50), [0, 1, 2, 3], 3200, n=251, seed=7, factor=4, thresholds=thr)
    assert under.evidence["drop_lower_bound"] == pytest.approx(5 / 251, abs=1e-15) and not under.evidence["flagged"]
    assert "the 97.5% lower confidence bound of the drop (1.9 points; estimate 4.0) is under ladder_margin (2.0)" \
        in under.message
    ev = flag.evidence
    assert (ev["broken"], ev["sampled"], ev["survivors"], ev["queries"], ev["seed"]) == (6, 20, 50, 3200, 7)
    assert ev["estimated_drop"] == pytest.approx(0.15) and ev["drop_lower_bound"] == pytest.approx(0.08, abs=1e-15)
    # one lucky sample is noise: 1 of 20 (a bound of the 1 kill, 1.0 point, and < min_count) is not flagged; but
    # its estimate (1/20 of 50 survivors: 2.5 points) reaches the margin, so the verdict is inconclusive, and says
    # what decides it: every survivor re-attacked (nothing extrapolated), at 50/20 of the queries
    quiet = judge(_plan(), [3], 3200, n=100, seed=7, factor=4, thresholds=thr)
    assert quiet.code == "budget-inconclusive" and quiet.severity == "info" and not quiet.evidence["flagged"]
    assert quiet.evidence["inconclusive"] and quiet.evidence["estimated_drop"] == pytest.approx(0.025)
    assert ("inconclusive, the 97.5% lower confidence bound of the drop (1.0 points; estimate 2.5) is under "
            "ladder_margin") in quiet.message
    assert ("re-attack all 50 survivors to decide (diagnostics.budget_check.min_samples: 50; about 2.5x its queries "
            "(3200))") in quiet.message
    # nothing broken, or an estimate under the margin: passed
    for broken, n in (([], 100), ([3], 200)):  # 1/20 of 50 of 200 samples: an estimate of 1.25 points
        passed = judge(_plan(), broken, 3200, n=n, seed=7, factor=4, thresholds=thr)
        assert passed.code == "budget-checked" and not passed.evidence["inconclusive"]
        assert "not flagged" in passed.message and "decide" not in passed.message
    # a bound over the margin from a single kill of a census: not flagged (min_count), inconclusive; more samples decide
    few = judge(_plan(4, 4), [3], 3200, n=10, seed=7, factor=4, thresholds=thr)
    assert few.code == "budget-inconclusive" and "fewer than min_count (2)" in few.message
    assert ("the 97.5% lower confidence bound of the drop (10.0 points; estimate 10.0) reaches ladder_margin (2.0), "
            "but it broke 1, fewer than min_count (2) — every survivor") in few.message
    assert "but the estimate reaches" not in few.message
    assert "every survivor was re-attacked and one kill is 10.0 points of the headline" in few.message
    # ... and a stricter margin turns the first verdict off (its estimate, 15 points, still reaches 11), a looser
    # min_count / margin turns the second on
    strict = judge(_plan(), list(range(6)), 1, 100, 7, 4, Thresholds(ladder_margin=0.11))
    assert strict.code == "budget-inconclusive" and not strict.evidence["flagged"]
    assert judge(_plan(), list(range(6)), 1, 100, 7, 4, Thresholds(ladder_margin=0.16)).code == "budget-checked"
    # every sampled survivor: the kills are the whole story (2 of 50, all sampled -> exactly 2 points)
    census = judge(_plan(50, 50), [0, 1], 1, 100, 7, 4, thr)
    assert census.code == "budget-still-lowering" and census.evidence["drop_lower_bound"] == pytest.approx(0.02)
    loose = Thresholds(ladder_margin=0.001, min_count=1)
    assert judge(_plan(), [3], 1, 100, 7, 4, loose).code == "budget-still-lowering"


def _scripted(kills: set[int], calls: list[list[int]], counted: Sequence[bool] | None = None):
    """A re-run batch runner that breaks exactly the survivors ``kills`` (10 queries a sample), logging each call;
    with ``counted``, its ``len(calls)``-th call counts its queries only if ``counted[i]`` (else ``None``)."""
    def run(jobs):
        tally = counted is None or counted[len(calls)]
        calls.append(sorted(p for job in jobs for p in job.positions))
        return [([p for p in job.positions if p in kills], 10 * len(job.positions) if tally else None)
                for job in jobs]
    return run


def test_an_inconclusive_sample_is_settled_on_every_survivor() -> None:
    record = make_record(_cascade())  # 5 survivors (15-19) of 20 samples
    record.clean_margins = [-1.0] * 17 + [-0.1, -1.0, -1.0]  # 17 is the closest to breaking
    spec = BudgetCheckSpec(samples=5, min_samples=2, factor=4, attacks=1, max_cost=1e-6)
    (_, _, (plan,), _), = plan_reruns(record, spec, seed=0)
    random_part = [i for i in plan.sampled if i not in plan.closest]
    rest = [i for i in range(15, 20) if i not in plan.sampled]
    assert plan.closest == [17] and len(random_part) == 1 and len(rest) == 3
    # one kill among the first sample's random part: fewer than min_count, but its estimate extrapolates it to
    # every survivor outside the closest part (>= 2 points) -> the same attack and seed re-attack the other 3
    calls: list[list[int]] = []
    flag, = run_budget_check(None, None, None, record, spec, Thresholds(), 0, 20,
                             runner=_scripted({random_part[0], rest[0]}, calls))
    assert calls == [plan.sampled, rest]
    ev = flag.evidence
    assert flag.code == "budget-still-lowering" and ev["sampled"] == 5 and ev["sampled_indices"] == list(range(15, 20))
    assert ev["broken_indices"] == sorted([random_part[0], rest[0]]) and ev["queries"] == 50
    assert ev["drop_lower_bound"] == pytest.approx(2 / 20) and ev["estimated_drop"] == pytest.approx(2 / 20)
    assert ev["closest_indices"] == plan.closest  # the census keeps the first sample's strata
    first = ev["first_sample"]
    assert first["sampled_indices"] == plan.sampled and first["broken_indices"] == [random_part[0]]
    assert first["queries"] == 20
    assert first["estimated_drop"] >= 0.02 and first["drop_lower_bound"] < first["estimated_drop"]
    assert "every survivor after an inconclusive first sample (1 of 2 broken)" in flag.message
    assert "broke 2 of 5 sampled survivors (of 5; the 1 closest to breaking: 0 broken; the other 4: 2; 50 queries)" \
        in flag.message
    # the other survivors hold no kill: one verified kill of 20 samples is 5 points but fewer than min_count;
    # every survivor was re-attacked, so only more samples decide
    calls.clear()
    flag, = run_budget_check(None, None, None, record, spec, Thresholds(), 0, 20,
                             runner=_scripted({random_part[0]}, calls))
    assert calls == [plan.sampled, rest] and flag.code == "budget-inconclusive" and flag.evidence["sampled"] == 5
    assert "every survivor was re-attacked and one kill is 5.0 points of the headline" in flag.message
    # more survivors than `samples`: not settled; the verdict says what would settle it and at what cost
    calls.clear()
    few = dataclasses.replace(spec, samples=4)
    flag, = run_budget_check(None, None, None, record, few, Thresholds(), 0, 20,
                             runner=_scripted({random_part[0]}, calls))
    assert calls == [plan.sampled] and flag.code == "budget-inconclusive" and "first_sample" not in flag.evidence
    assert "re-attack all 5 survivors to decide (diagnostics.budget_check.min_samples: 5; about 2.5x its queries " \
           "(20))" in flag.message
    # a first sample that decides (two kills, or none) is not extended
    for kills in ({plan.sampled[0], plan.sampled[1]}, set()):
        calls.clear()
        flag, = run_budget_check(None, None, None, record, spec, Thresholds(), 0, 20, runner=_scripted(kills, calls))
        assert calls == [plan.sampled] and flag.code in ("budget-still-lowering", "budget-checked")


def test_budget_check_config_keys_and_errors() -> None:
    base = {"dataset": "toy", "threats": [{"norm": "linf", "epsilons": [0.2]}], "attacks": ["pgd"]}
    cfg = EvalConfig.from_dict({**base, "diagnostics": {"budget_check": {"factor": 3, "samples": 10,
                                                                          "enabled": False}}})
    assert cfg.diagnostics.budget_check == BudgetCheckSpec(enabled=False, factor=3, samples=10)
    assert cfg.to_dict()["diagnostics"]["budget_check"]["factor"] == 3
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg
    bad = [({"factor": 1}, "budget_check.factor: must be >= 2"), ({"enabled": "yes"}, "expected true or false"),
           ({"sample": 3}, "unknown key 'sample'"), ({"max_cost": 0}, "max_cost: must be > 0"),
           ({"closest": 1.5}, "closest: must be between 0 and 1"), ({"min_samples": 0}, "min_samples: must be >= 1"),
           ({"min_samples": "auto"}, "min_samples: expected an integer, got 'auto'")]
    assert cfg.diagnostics.budget_check.min_samples is None  # null: the default rule (floor_samples)
    pinned = EvalConfig.from_dict({**base, "diagnostics": {"budget_check": {"min_samples": 12}}})
    assert EvalConfig.from_dict(pinned.to_dict()).diagnostics.budget_check.min_samples == 12
    for raw, message in bad:
        with pytest.raises(ConfigError, match=message):
            EvalConfig.from_dict({**base, "diagnostics": {"budget_check": raw}})


class TinyKWTA(nn.Module):
    """Linear → dense kWTA → linear on 4×4 inputs: the gates make plain gradients unreliable."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), KWTA(ratio=0.25), nn.Linear(32, 3))
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.5

    def forward(self, x):
        return self.body(x)


def _tiny_eval(tmp_path, budget: dict, out: str):
    model = TinyKWTA().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(48, 1, 4, 4, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)
    data = TensorData(x, y, "toy", 3, torch.arange(48))
    cfg = EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 48, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.2]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 2, "step_size": 0.01}},  # 2 small steps: not converged
                    {"attack": "bpda", "label": "bpda-smooth",
                     "params": {"surrogate": "smooth", "inner_params": {"steps": 2, "step_size": 0.01}}}],
        "diagnostics": {"gradient_batch": 8, "budget_check": budget},
    })
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = evaluate(model, data, cfg, {"name": "tiny"}, out_path=tmp_path / out, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return model, data, cfg, record


def test_end_to_end_on_a_tiny_kwta_model(tmp_path) -> None:
    budget = {"factor": 10, "samples": 16, "min_samples": 4, "max_cost": 5.0}
    model, data, cfg, record = _tiny_eval(tmp_path, budget, "a.json")
    selected = select_samples(data, cfg)
    with torch.no_grad():  # the record holds each sample's clean margin, max_{j != y} z_j - z_y
        logits = model(selected.x)
    true = logits.gather(1, selected.y[:, None])[:, 0]
    others = logits.scatter(1, selected.y[:, None], float("-inf")).amax(1)
    assert record.clean_margins == pytest.approx((others - true).tolist(), abs=1e-6)
    # and each attack's margin on the output it re-classified: negative where the sample survived, NaN -> null
    # where it was not attacked (here pgd attacks every clean-correct sample, bpda-smooth pgd's survivors)
    margins = [r.margins for r in record.results]
    for r in record.results:
        assert all((m is None) == (f == -1) for m, f in zip(r.margins, r.flags))
        assert all(m < 0 for m, f in zip(r.margins, r.flags) if f == 1)
        assert all(m > 0 for m, f in zip(r.margins, r.flags) if f == 0)
    checks = [f for f in record.diagnostics if f.evidence.get("source") == "rerun"]
    assert len(checks) == 2 and {f.evidence["registry_name"] for f in checks} == {"pgd", "bpda"}
    worst = record.worst("linf", 0.2).robust
    for f in checks:
        ev = f.evidence
        assert ev["survivors"] == worst.correct and ev["sampled"] == min(16, worst.correct)
        assert set(ev["broken_indices"]) <= set(ev["sampled_indices"]) and ev["queries"] > 0
        assert all(record.clean_flags[i] == 1 for i in ev["sampled_indices"])
        survivors = [i for i, w in enumerate(record.worst("linf", 0.2).first_broken_by) if w == -1]
        approach = {i: max(m[i] for m in margins if m[i] is not None) for i in survivors}  # attacked by both
        h = ev["sampled"] * 3 // 4  # the default closest fraction, 0.75, rounded down
        closest = sorted(survivors, key=lambda i: -approach[i])[:h]
        assert ev["closest_indices"] == sorted(closest) and ev["closest"] == h
        assert f.code == ("budget-still-lowering" if ev["flagged"] else
                          "budget-inconclusive" if ev["inconclusive"] else "budget-checked")
        assert ev["inconclusive"] == (not ev["flagged"] and ev["broken"] > 0 and ev["estimated_drop"] >= 0.02)
    assert any(f.evidence["broken"] > 0 for f in checks)  # 2-step attacks on a kWTA model: 20 steps break more
    # the headline is the configured suite's: the extra kills are evidence, not results
    assert [r.label for r in record.results] == ["pgd", "bpda-smooth"]
    # seeded: the same run gives the same check
    _, _, _, again = _tiny_eval(tmp_path, budget, "b.json")
    assert [f.to_dict() for f in again.diagnostics] == [f.to_dict() for f in record.diagnostics]
    # switched off: no extra run at all
    _, _, _, off = _tiny_eval(tmp_path, {**budget, "enabled": False}, "c.json")
    assert not [f for f in off.diagnostics if f.evidence.get("source") in ("rerun", "rerun-skipped")]
    assert off.worst("linf", 0.2).robust == worst


def test_the_extra_runs_split_into_batches_that_run_anywhere(tmp_path) -> None:
    """Each extra run is cut into the batches its sampled survivors lie in; run in any order (as the workers of a
    sharded evaluation run them), the batches give the flags of the check run here, one batch after the other."""
    budget = {"factor": 10, "samples": 16, "min_samples": 4, "max_cost": 5.0}
    model, data, cfg, record = _tiny_eval(tmp_path, budget, "a.json")
    record.diagnostics = []  # else the stored flags of the finished run are returned
    selected = select_samples(data, cfg)
    shipped = []

    def reversed_runner(jobs):
        shipped.extend(jobs)
        return [run_rerun_batch(model, selected.x, selected.y, job, 16) for job in reversed(jobs)][::-1]

    args = (record, cfg.diagnostics.budget_check, cfg.diagnostics.thresholds, cfg.seed, 16)
    here = run_budget_check(model, selected.x, selected.y, *args)
    anywhere = run_budget_check(model, selected.x, selected.y, *args, runner=reversed_runner)
    assert [f.to_dict() for f in anywhere] == [f.to_dict() for f in here] and len(here) == 2
    assert any(f.evidence["broken"] > 0 for f in here)
    assert len(shipped) > len(here) and all(len({i // 16 for i in job.positions}) == 1 for job in shipped)
    assert sorted(i for job in shipped if job.attack == "pgd" for i in job.positions) == \
        [f.evidence for f in here if f.evidence["registry_name"] == "pgd"][0]["sampled_indices"]


def test_documented_defaults_are_the_real_ones() -> None:
    import yaml
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "eval_configs" / "README.md").read_text()
    block = yaml.safe_load(text.split("```yaml", 1)[1].split("```", 1)[0])
    assert BudgetCheckSpec(**block["diagnostics"]["budget_check"]) == BudgetCheckSpec()
