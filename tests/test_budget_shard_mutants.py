"""Pins of the budget check (kwta_robust/budget_check.py) and of sharded evaluation's planning and merge
(kwta_robust/shards.py) that kill the survivors of a mutation round on these modules: the strongest attack of a
family and the tie to the earlier position, the plan's sample sizes written out from the documented rule (floors
first, then extras shared from the strongest attack down within ``max_cost``, at most the survivors), the default
floor against exact rational arithmetic, the verdict at its edges (no random part, an estimate of exactly
``ladder_margin``, a bound of exactly it, a zero margin), the settle step's bookkeeping (a census is not re-run,
queries nobody counted stay ``None``, a runner that loses outcomes is an error, a stored check is returned as it is),
the shards' plan (no sanity jobs where diagnostics are off), the merge's costs (wall time, queries, violations summed,
the largest violation the maximum) and per-sample lists a part lacks, unmerged parts refused only on resume, and the
jobs' memory layout. Synthetic records only: milliseconds."""

from __future__ import annotations

import copy
import dataclasses
import math
from fractions import Fraction

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.budget_check import (CHECKED, INCONCLUSIVE, floor_samples, judge, kills_lower_bound, plan_reruns,
                                      run_budget_check, strongest_by_family)
from kwta_robust.config import EvalConfig
from kwta_robust.diagnostics import INFO, Thresholds
from kwta_robust.errors import ConfigError, KwtaRobustError
from kwta_robust.results import Flag
from kwta_robust.shards import merge_records, parts_folder, plan_parts, recorded_layout, refuse_unmerged_parts
from kwta_robust.specs import BudgetCheckSpec
from test_budget_check import _cascade, _plan, _scripted
from test_shard_merge import CFG, part, whole_record


# ---------------------------------------------------------------------------------------------------------------
# which attacks are re-run
# ---------------------------------------------------------------------------------------------------------------
def test_the_strongest_of_a_family_is_the_largest_rate_then_count_then_the_earlier_position() -> None:
    # independent mode (every attack on every sample): pgd breaks 4 of 20, apgd-ce 8, cw 8 (the same rate and count
    # as apgd-ce, a later position), bpda-smooth 6: white-box is apgd-ce's (8/20 beats 4/20; the tie with cw goes to
    # the earlier position), and it outranks the bpda family (6/20)
    pgd = make_result("pgd", [0] * 4 + [1] * 16, params={"steps": 10}, eps=0.1)
    apgd = make_result("apgd-ce", [0] * 8 + [1] * 12, position=1, eps=0.1)
    cw = make_result("cw", [1] * 12 + [0] * 8, position=2, eps=0.1)
    bpda = make_result("bpda-smooth", [0] * 6 + [1] * 14, attack="bpda", kind="bpda", position=3, eps=0.1,
                       params={"surrogate": "smooth", "inner_params": {"steps": 10}})
    assert [r.label for r in strongest_by_family([pgd, apgd, cw, bpda], 2)] == ["apgd-ce", "bpda-smooth"]
    assert [r.label for r in strongest_by_family([bpda, cw, pgd, apgd], 2)] == ["apgd-ce", "bpda-smooth"]
    assert [r.label for r in strongest_by_family([pgd, dataclasses.replace(cw, position=0), apgd], 1)] == ["cw"]


# ---------------------------------------------------------------------------------------------------------------
# how many survivors each re-run attacks
# ---------------------------------------------------------------------------------------------------------------
def _two_families(pgd_queries: int | None = 160, bpda_queries: int | None = 120) -> list:
    """pgd (white-box) breaks 4 of 20 (16 survive), bpda-smooth (cascade) 4 of those 16 (12 survive): rates 0.2 and
    0.25, so bpda-smooth is re-run first."""
    pgd = make_result("pgd", [0] * 4 + [1] * 16, params={"steps": 10}, eps=0.1)
    bpda = make_result("bpda-smooth", [-1] * 4 + [0] * 4 + [1] * 12, attack="bpda", kind="bpda", position=1,
                       cumulative=True, params={"surrogate": "smooth", "inner_params": {"steps": 10}}, eps=0.1)
    pgd.queries, bpda.queries = pgd_queries, bpda_queries
    return [pgd, bpda]


def _sizes(survivors: int, costs: list[float], spent: float, spec: BudgetCheckSpec, floor: int) -> list[int]:
    """The documented rule written out: every run attacks ``floor`` survivors (at most all); the rest of
    ``max_cost · spent`` buys extra survivors, strongest attack first, up to ``samples`` and at most all."""
    floor = min(floor, survivors)
    left, sizes = spec.max_cost * spent - floor * sum(costs), []
    for cost in costs:
        m = floor
        while m < min(spec.samples, survivors) and left >= cost:
            m, left = m + 1, left - cost
        sizes.append(m)
    return sizes


def test_the_extra_survivors_are_shared_from_the_strongest_attack_down() -> None:
    record = make_record(_two_families())
    # per survivor at 2x: bpda-smooth 2 x 120 / 12 = 20 queries, pgd 2 x 160 / 16 = 20; 280 spent
    for max_cost, samples in ((0.8, 6), (0.5, 6), (1.0, 12), (0.3, 8), (2.0, 5)):
        spec = BudgetCheckSpec(samples=samples, min_samples=2, factor=2, attacks=2, max_cost=max_cost)
        (_, _, runs, _), = plan_reruns(record, spec, seed=0)
        assert [p.result.label for p in runs] == ["bpda-smooth", "pgd"]
        assert [len(p.sampled) for p in runs] == _sizes(12, [20.0, 20.0], 280, spec, 2), (max_cost, samples)
        for p in runs:  # the estimate charges each sampled survivor its attack's cost
            assert p.estimated_queries == pytest.approx(20.0 * len(p.sampled))
    # 0.8 x 280 = 224, less the floors (80): 144 buys bpda-smooth 4 more (its cap, 6) and pgd the other 64: 3 more
    spec = BudgetCheckSpec(samples=6, min_samples=2, factor=2, attacks=2, max_cost=0.8)
    assert [len(p.sampled) for p in plan_reruns(record, spec, seed=0)[0][2]] == [6, 5]


def test_a_run_never_counts_more_survivors_than_there_are() -> None:
    record = make_record(_two_families())  # 12 survivors
    # a floor above the survivors is all of them, and the room for more than them charges nothing for the rest
    for spec in (BudgetCheckSpec(samples=30, min_samples=20, factor=2, attacks=2, max_cost=1e-6),
                 BudgetCheckSpec(samples=30, min_samples=2, factor=2, attacks=2, max_cost=100.0)):
        for p in plan_reruns(record, spec, seed=0)[0][2]:
            assert len(p.sampled) == p.survivors == 12 and p.floor == min(spec.min_samples, 12)
            assert p.estimated_queries == pytest.approx(12 * 20.0)


def test_per_survivor_cost_charges_every_query_to_the_survivors() -> None:
    # pgd leaves one survivor of 20: all its 100 queries are charged to it; at 4x a re-run of it costs 400
    pgd = make_result("pgd", [0] * 19 + [1], params={"steps": 10}, eps=0.1)
    pgd.queries = 100
    (_, _, (run,), _), = plan_reruns(make_record([pgd]), BudgetCheckSpec(factor=4, max_cost=10.0), seed=0)
    assert run.sampled == [19] and run.estimated_queries == pytest.approx(4 * 100 / 1)
    # an attack that counted no queries still costs at least one a sample (no division by a zero cost)
    pgd.queries = 0
    (_, _, (run,), _), = plan_reruns(make_record([pgd]), BudgetCheckSpec(factor=4, max_cost=10.0), seed=0)
    assert run.sampled == [19] and run.estimated_queries == pytest.approx(4 * 1)


def test_an_attack_without_counted_queries_is_not_capped_by_cost() -> None:
    # no query count, no cost to cap: the run takes `samples` survivors (all 12 if fewer); its estimate is unknown
    record = make_record(_two_families(pgd_queries=None, bpda_queries=None))
    for samples in (5, 30):
        spec = BudgetCheckSpec(samples=samples, min_samples=2, factor=2, attacks=2, max_cost=1e-6)
        for p in plan_reruns(record, spec, seed=0)[0][2]:
            assert len(p.sampled) == min(samples, 12) and math.isnan(p.estimated_queries)


def test_the_default_floor_is_exact_at_every_n() -> None:
    """``ladder_margin · n`` in binary floating point overshoots whole numbers (0.02 x 350 reads 7.000000000000001):
    the floor is four times the exact ceiling, checked against rational arithmetic."""
    spec = BudgetCheckSpec(samples=10_000)
    for margin in ("0.02", "0.03", "0.05", "0.07"):
        thresholds = Thresholds(ladder_margin=float(margin))
        for n in range(1, 1001):
            needed = max(thresholds.min_count, math.ceil(Fraction(margin) * n))
            assert floor_samples(spec, thresholds, n) == 4 * needed, (margin, n)


# ---------------------------------------------------------------------------------------------------------------
# the verdict
# ---------------------------------------------------------------------------------------------------------------
def test_a_sample_of_only_the_closest_extrapolates_nothing() -> None:
    # every sampled survivor is among the closest (closest = 1.0): no random part, so nothing is extrapolated to
    # the 42 survivors left out, neither in the estimate nor in the bound: both are the 3 verified kills
    plan = dataclasses.replace(_plan(8, 50), closest=list(range(8)))
    ev = judge(plan, [0, 1, 5], 1, n=100, seed=0, factor=4, thresholds=Thresholds()).evidence
    assert (ev["closest"], ev["broken_closest"]) == (8, 3)
    assert ev["estimated_drop"] == pytest.approx(3 / 100) and ev["drop_lower_bound"] == pytest.approx(3 / 100)


def _exact_estimate(k_close: int, k_rand: int, m: int, h: int, s: int, n: int) -> Fraction:
    """The documented estimate ``(k_c + k_r / (m − h) · (S − h)) / n`` in exact arithmetic."""
    return (k_close + Fraction(k_rand, m - h) * (s - h)) / n


@pytest.mark.parametrize("n, m, s", [(100, 20, 40), (58, 25, 29), (24, 15, 18), (66, 10, 11)])
def test_an_estimate_of_exactly_ladder_margin_reaches_it(n: int, m: int, s: int) -> None:
    """One kill among ``m`` random survivors of ``s``, extrapolated: exactly 2 points (5 from n = 24 and 66 on), the
    margin. The estimate *reaches* the margin, so the verdict is inconclusive — also where the floating-point product
    ``1/25 x 29`` rounds under the quotient (n = 58: 0.019999999999999997)."""
    margin = 0.05 if n in (24, 66) else 0.02
    k_rand = 3 if n == 66 else 1
    assert _exact_estimate(0, k_rand, m, 0, s, n) == Fraction(str(margin))
    flag = judge(_plan(m, s), list(range(k_rand)), 1, n, 0, 4, Thresholds(ladder_margin=margin, min_count=5))
    # the bound: the exact 97.5% lower bound of the kills among the s survivors (all drawn at random, h = 0)
    assert flag.evidence["drop_lower_bound"] == pytest.approx(kills_lower_bound(k_rand, m, s) / n, abs=1e-15)
    assert flag.evidence["drop_lower_bound"] < margin  # not raised: the bound is under it (and k < min_count)
    assert flag.code == INCONCLUSIVE and flag.evidence["inconclusive"] and not flag.evidence["flagged"]
    assert flag.evidence["estimated_drop"] == float(Fraction(str(margin)))


def test_a_bound_of_exactly_ladder_margin_reaches_it() -> None:
    # a census of 50 survivors of 50 samples with 1 kill: the bound is exactly 1/50 = 2 points, the margin; not raised
    # only because 1 kill is fewer than min_count, which the verdict says (and not that the bound is under the margin)
    flag = judge(_plan(50, 50), [7], 1, n=50, seed=0, factor=4, thresholds=Thresholds())
    assert flag.evidence["drop_lower_bound"] == pytest.approx(0.02) and flag.code == INCONCLUSIVE
    assert "reaches ladder_margin (2.0), but it broke 1, fewer than min_count (2)" in flag.message
    assert "is under ladder_margin" not in flag.message


def test_no_kill_is_never_inconclusive_even_at_a_zero_margin() -> None:
    for thresholds in (Thresholds(ladder_margin=0.0), Thresholds()):
        flag = judge(_plan(), [], 1, n=100, seed=0, factor=4, thresholds=thresholds)
        assert flag.code == CHECKED and not flag.evidence["inconclusive"] and not flag.evidence["flagged"]


# ---------------------------------------------------------------------------------------------------------------
# running and settling
# ---------------------------------------------------------------------------------------------------------------
def test_a_census_that_is_inconclusive_is_not_re_attacked() -> None:
    record = make_record(_cascade())  # 5 survivors (15-19) of 20 samples
    spec = BudgetCheckSpec(samples=5, min_samples=5, factor=4, attacks=1, max_cost=1e-6)
    calls: list[list[int]] = []
    flag, = run_budget_check(None, None, None, record, spec, Thresholds(), 0, 20, runner=_scripted({16}, calls))
    # one kill of 20 samples (5 points) but fewer than min_count: inconclusive, and every survivor was attacked
    assert calls == [[15, 16, 17, 18, 19]] and flag.code == INCONCLUSIVE and "first_sample" not in flag.evidence
    assert flag.evidence["broken_indices"] == [16] and flag.evidence["queries"] == 50


def test_queries_nobody_counted_stay_unknown_and_counted_ones_add_up() -> None:
    record = make_record(_cascade())
    record.clean_margins = [-1.0] * 17 + [-0.1, -1.0, -1.0]
    spec = BudgetCheckSpec(samples=5, min_samples=2, factor=4, attacks=1, max_cost=1e-6)
    (_, _, (plan,), _), = plan_reruns(record, spec, seed=0)
    random_part = [i for i in plan.sampled if i not in plan.closest]
    # the first sample (2 survivors) is inconclusive and settled on the other 3: the queries are what was counted
    for counted, queries in (([True, False], 20), ([False, True], 30), ([False, False], None), ([True, True], 50)):
        calls: list[list[int]] = []
        flag, = run_budget_check(None, None, None, record, spec, Thresholds(), 0, 20,
                                 runner=_scripted({random_part[0]}, calls, counted))
        assert len(calls) == 2 and flag.evidence["sampled"] == 5 and flag.evidence["queries"] == queries
        assert flag.evidence["first_sample"]["queries"] == (20 if counted[0] else None)


def test_a_runner_that_loses_outcomes_is_an_error() -> None:
    record = make_record(_cascade())
    spec = BudgetCheckSpec(samples=5, min_samples=2, factor=4, attacks=1, max_cost=1e-6)
    with pytest.raises(KwtaRobustError, match="re-run batches gave 0 outcomes"):
        run_budget_check(None, None, None, record, spec, Thresholds(), 0, 20, runner=lambda jobs: [])


def test_a_finished_check_in_a_resumed_record_is_returned_as_it_is() -> None:
    spec = BudgetCheckSpec(samples=5, min_samples=2, factor=4, attacks=1, max_cost=1e-6)
    stored = [Flag(CHECKED, INFO, "skipped", {"source": "rerun-skipped", "norm": "linf", "eps": 0.1, "reason": "x"}),
              Flag(CHECKED, INFO, "checked", {"source": "rerun", "attack": "pgd"})]
    for flags in (stored[:1], stored):
        record = make_record(_cascade())
        record.diagnostics = list(flags)
        calls: list[list[int]] = []
        assert run_budget_check(None, None, None, record, spec, Thresholds(), 0, 20,
                                runner=_scripted(set(), calls)) == flags and calls == []


# ---------------------------------------------------------------------------------------------------------------
# sharded evaluation
# ---------------------------------------------------------------------------------------------------------------
def test_no_sanity_jobs_where_diagnostics_are_off() -> None:
    base = {"dataset": "toy", "threats": [{"norm": "linf", "epsilons": [0.3]}], "attacks": ["pgd"],
            "diagnostics": {"sanity": {"attack": "pgd", "norm": "linf", "eps": 1.0, "params": {"steps": 3}}}}
    for enabled in (True, False):
        cfg = EvalConfig.from_dict({**base, "diagnostics": {**base["diagnostics"], "enabled": enabled}})
        scopes = [p.scope for p in plan_parts(cfg, [(0, 5), (5, 10)], {})]
        assert scopes.count("sanity") == (2 if enabled else 0) and scopes.count("attacks") == 2


def test_the_merge_sums_costs_and_keeps_the_largest_violation() -> None:
    whole = whole_record()
    whole.provenance["wall_time_s"] = 1.5
    parts = [part(whole, 0, 4), part(whole, 4, 7), part(whole, 7, 10)]
    costs = [(0.25, 3, 0.01, 100), (0.5, 0, 0.0, None), (2.0, 5, 0.004, 40)]  # wall time, violations, max, queries
    for piece, (wall, violations, largest, queries), spent in zip(parts, costs, (2.0, 0.75, 4.0)):
        piece.provenance["wall_time_s"] = spent
        for r in piece.results:
            r.wall_time_s, r.violations, r.max_violation, r.queries = wall, violations, largest, queries
    merged = merge_records(whole, parts, CFG)
    for r in merged.results:
        assert r.wall_time_s == pytest.approx(2.75) and (r.violations, r.max_violation) == (8, 0.01)
        assert r.queries == 140
    assert merged.provenance["wall_time_s"] == pytest.approx(1.5 + 2.0 + 0.75 + 4.0)
    for piece in parts:
        for r in piece.results:
            r.queries = None
    assert all(r.queries is None for r in merge_records(whole, parts, CFG).results)  # none counted: unknown


def test_a_per_sample_list_one_part_lacks_is_not_merged() -> None:
    """A part written without margins or error rates (an older version) cannot be concatenated in sample order: the
    merged unit holds none rather than a list shifted against its samples."""
    whole = whole_record()
    for r in whole.results:
        r.error_rates = [0.1 * i for i in range(10)]
    parts = [part(whole, 0, 5), part(whole, 5, 10)]
    for piece, (start, stop) in zip(parts, ((0, 5), (5, 10))):
        for r in piece.results:
            r.error_rates = r.error_rates[start:stop]
    merged = merge_records(whole, parts, CFG)
    assert [r.error_rates for r in merged.results] == [r.error_rates for r in whole.results]
    assert [r.margins for r in merged.results] == [r.margins for r in whole.results]
    older = copy.deepcopy(parts)
    for r in older[1].results:
        r.margins, r.error_rates = [], []
    merged = merge_records(whole, older, CFG)
    assert all(r.margins == [] and r.error_rates == [] for r in merged.results)


def test_unmerged_parts_refuse_only_a_resuming_run(tmp_path) -> None:
    out = tmp_path / "model.json"
    refuse_unmerged_parts(out, resume=True)  # no parts folder: nothing to refuse
    parts_folder(out).mkdir()
    (parts_folder(out) / "whole-set.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds the finished parts of an interrupted sharded run"):
        refuse_unmerged_parts(out, resume=True)
    refuse_unmerged_parts(out, resume=False)  # --no-resume starts over without them


def test_the_jobs_rebuild_the_layout_the_evaluation_ran_in() -> None:
    record = whole_record()
    for layout, argument in (("as given", "preserve"), ("channels_last", "channels_last")):
        record.provenance["layout"] = layout
        assert recorded_layout(record) == argument
