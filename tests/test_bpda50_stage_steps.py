"""How BPDA splits its inner attack's steps over stages when not every stage sets its own: a ``null`` entry of
``stage_steps`` takes an even share of what ``inner_params.steps`` (the total) leaves after the set entries; a stage
whose inner attack takes no steps (FGSM) takes no share (its share was lost: the other stages ran half the total);
a split that leaves an unset stage no step is a one-line error naming the numbers and the fix. The budget check's
scaling and the smoke runs' cap keep null entries null."""

from __future__ import annotations

import pytest

from attacks import create_attack
from attacks.base import AttackConfigError
from kwta_robust.budget_scale import cap_budget, scale_budget

SCHEDULE = [0.1, 0.05, 0.03]


def steps_of(attack: object) -> list:
    return [getattr(stage, "steps", None) for stage in attack.stages]


def test_null_entries_share_what_the_set_ones_leave_of_the_total() -> None:
    attack = create_attack("bpda", surrogate="smooth", inner="pgd", inner_params={"steps": 10},
                           temperature_schedule=SCHEDULE, stage_steps=[4, None, None], seed=2)
    assert steps_of(attack) == [4, 3, 3] and [s.seed for s in attack.stages] == [2, 3, 4]
    default = create_attack("bpda", surrogate="smooth", inner="pgd", temperature_schedule=SCHEDULE,
                            stage_steps=[None, 30, None])  # PGD's default total, 40
    assert steps_of(default) == [5, 30, 5]


def test_a_stage_without_steps_takes_no_share() -> None:
    fgsm_last = [{}, {}, {"inner": "fgsm"}]
    split = create_attack("bpda", surrogate="smooth", inner="pgd", inner_params={"steps": 9},
                          temperature_schedule=SCHEDULE, stage_params=fgsm_last)
    assert steps_of(split) == [5, 4, None]
    given = create_attack("bpda", surrogate="smooth", inner="pgd", temperature_schedule=SCHEDULE,
                          stage_steps=[3, 7, None], stage_params=fgsm_last)
    assert steps_of(given) == [3, 7, None]


@pytest.mark.parametrize(("params", "message"), [
    ({"inner_params": {"steps": 10}, "stage_steps": [9, None, None]},
     "stage_steps: the set entries take 9 of the 10 inner steps (inner_params.steps), leaving 1 for the 2 stage(s) "
     "left null (1, 2); raise the total (inner_params.steps) to at least 11 or give those stages their steps"),
    ({"stage_steps": [None, 40, 5]},
     "stage_steps: the set entries take 45 of the 40 inner steps (the default of 'pgd'), leaving 0 for the 1 "
     "stage(s) left null (0); raise the total (inner_params.steps) to at least 46 or give those stages their steps"),
    ({"stage_steps": [1, 2, 3], "stage_params": [{}, {"inner": "fgsm"}, {}]},
     "stage_steps[1]: stage 1's inner attack 'fgsm' has no 'steps' budget; make that entry null"),
])
def test_an_impossible_split_is_a_one_line_error(params: dict, message: str) -> None:
    with pytest.raises(AttackConfigError) as caught:
        create_attack("bpda", surrogate="smooth", inner="pgd", temperature_schedule=SCHEDULE, **params)
    assert str(caught.value) == message


def test_scaled_and_capped_budgets_keep_null_entries() -> None:
    params = {"surrogate": "smooth", "inner": "pgd", "temperature_schedule": SCHEDULE, "stage_steps": [4, None, None]}
    scaled = scale_budget("bpda", params, 3)
    assert scaled["stage_steps"] == [12, None, None] and scaled["inner_params"] == {"steps": 120}
    assert steps_of(create_attack("bpda", **scaled)) == [12, 54, 54]
    capped = cap_budget("bpda", {**params, "inner_params": {"steps": 400}}, 2)
    assert steps_of(create_attack("bpda", **capped)) == [2, 2, 2]
