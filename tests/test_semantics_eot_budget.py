"""The budget check's larger budget for EOT: its budget is steps × draws per gradient (Athalye et al. 2018); as for
gradient estimation, ``factor`` scales the draws per gradient ``eot_samples`` (``factor`` times the queries, as for
every attack, which the cost estimate charges): scaling the steps alone left the gradient estimate exactly as noisy as
the suite's."""

from __future__ import annotations

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.budget_check import judge, plan_reruns
from kwta_robust.budget_scale import scale_budget
from kwta_robust.diagnostics import Thresholds
from kwta_robust.specs import BudgetCheckSpec


def test_eot_scales_its_draws_per_gradient() -> None:
    assert scale_budget("eot", {"steps": 4, "eot_samples": 2, "loss": "ce"}, 3) == {"steps": 4, "eot_samples": 6,
                                                                                    "loss": "ce"}
    assert scale_budget("eot", {}, 2) == {"eot_samples": 20}  # the default draws (10), scaled; steps as given
    bpda = scale_budget("bpda", {"inner": "eot", "inner_params": {"steps": 6, "eot_samples": 5}}, 2)
    assert bpda == {"inner": "eot", "inner_params": {"steps": 6, "eot_samples": 10}}
    assert scale_budget("pgd", {"steps": 5}, 3) == {"steps": 15}  # no draws to scale elsewhere


@pytest.mark.parametrize("attack, params", [("pgd", {"steps": 4}), ("square", {"n_queries": 10}),
                                            ("eot", {"steps": 4}), ("bpda", {"inner": "eot"})])
def test_the_plan_charges_every_attack_with_a_budget_the_factor(attack: str, params: dict) -> None:
    result = make_result(attack, [0] * 8 + [1] * 12, kind="adaptive", params=params, eps=0.1)
    result.queries = 480  # 40 per survivor at the suite's budget
    spec = BudgetCheckSpec(samples=5, min_samples=2, factor=3, attacks=1, max_cost=100.0)
    (_, _, (run,), _), = plan_reruns(make_record([result]), spec, seed=0)
    assert run.estimated_queries == pytest.approx(len(run.sampled) * 3 * 40)
    assert scale_budget("fgsm", {}, 3) is None  # no budget: never chosen, nothing to charge


def test_the_plan_charges_eot_its_scaled_draws_and_the_flag_names_them() -> None:
    eot = make_result("eot", [0] * 8 + [1] * 12, kind="adaptive", params={"steps": 4, "eot_samples": 2}, eps=0.1)
    eot.queries = 480  # 40 per survivor at the suite's budget
    spec = BudgetCheckSpec(samples=5, min_samples=2, factor=3, attacks=1, max_cost=100.0)
    (_, _, (run,), _), = plan_reruns(make_record([eot]), spec, seed=0)
    assert run.params == {"steps": 4, "eot_samples": 6}
    assert run.estimated_queries == pytest.approx(len(run.sampled) * 3 * 40)
    flag = judge(run, [], 0, 20, seed=1, factor=3, thresholds=Thresholds())
    assert "at 3x its budget (steps=4, eot_samples=6)" in flag.message
