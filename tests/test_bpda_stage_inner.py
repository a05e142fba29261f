"""BPDA's ``stage_params`` entries may name their stage's own ``inner`` gradient attack (e.g. APGD-T, targeted, in
the last stage only): built, seeded, budgeted and recorded per stage, validated with one-line errors naming the
entry, and the config layer sees every stage's inner attack (its norms, its class count)."""

from __future__ import annotations

import pytest
import torch

from attacks import ThreatModel, create_attack
from attacks.apgd import APGD, APGDTargeted
from attacks.base import AttackConfigError
from bpda_models import batch, kwta_mlp

SCHEDULE = [0.1, 0.05, 0.03]


def staged(stage_params: list, **params: object):
    return create_attack("bpda", surrogate="smooth", inner="apgd-ce", temperature_schedule=SCHEDULE,
                         stage_steps=[5, 6, 7], stage_params=stage_params, seed=3, **params)


def test_a_stage_runs_the_inner_attack_its_entry_names() -> None:
    attack = staged([{}, {"initial_step": 0.5}, {"inner": "apgd-t", "n_target_classes": 3, "initial_step": 0.5}])
    kinds = [type(stage) for stage in attack.stages]
    assert kinds == [APGD, APGD, APGDTargeted] and attack.stage_inner == ["apgd-ce", "apgd-ce", "apgd-t"]
    last = attack.stages[2]
    assert (last.steps, last.seed, last.n_target_classes, last.initial_step) == (7, 5, 3, 0.5)
    assert attack.name == "bpda-smooth+apgd-ce/apgd-t" and attack.stage_params[2] == {"n_target_classes": 3,
                                                                                 "initial_step": 0.5}
    inner = attack.attack_settings(num_classes=10)["inner"]
    assert [s["attack"] for s in inner] == ["apgd-ce", "apgd-ce", "apgd-t"]
    assert inner[2]["n_target_classes"] == 3 and "loss" not in inner[2] and inner[1]["loss"] == "ce"


def test_naming_the_same_inner_attack_changes_nothing_and_another_one_runs() -> None:
    model = kwta_mlp()
    x, y = batch(model, n=16)
    threat = ThreatModel("linf", 0.3)
    plain = staged([{}, {}, {}])(model, x, y, threat)
    assert torch.equal(staged([{}, {"inner": "apgd-ce"}, {}])(model, x, y, threat), plain)
    other = staged([{}, {}, {"inner": "apgd-dlr"}])  # the tiny MLP has 3 classes: APGD-T needs 4
    assert other.stages[2].loss == "dlr"
    x_adv = other(model, x, y, threat)
    assert bool(threat.contains(x_adv, x).all())


def test_the_stages_norms_are_those_every_inner_attack_supports() -> None:
    attack = create_attack("bpda", surrogate="smooth", inner="pgd", temperature_schedule=[0.1, 0.05],
                           stage_params=[{}, {"inner": "cw"}])
    assert attack.norms == ("l2",)


@pytest.mark.parametrize(("stage_params", "message"), [
    ([{}, {"inner": "apgd-x"}, {}], "stage_params[1].inner: unknown attack 'apgd-x'; known attacks: apgd-ce"),
    ([{}, {}, {"inner": 3}], "stage_params[2].inner: expected a registered attack name like 'pgd', got int"),
    ([{}, {"inner": "square"}, {}], "stage_params[1].inner: 'square' is a black-box attack; BPDA wraps a gradient "
                                    "attack like 'pgd'"),
    ([{}, {}, {"inner": "fgsm"}], "stage_steps[2]: stage 2's inner attack 'fgsm' has no 'steps' budget; make that "
                                  "entry null"),
    ([{}, {}, {"inner": "apgd-t", "n_target_classes": 0}], "stage_params[2]: attack 'apgd-t': "
                                                            "n_target_classes must be an integer >= 1, got 0"),
])
def test_a_bad_stage_inner_is_a_one_line_error(stage_params: list, message: str) -> None:
    with pytest.raises(AttackConfigError) as caught:
        staged(stage_params)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_config_checks_every_stage_s_inner_attack() -> None:
    """The eval config refuses before any work what a stage's inner attack would refuse mid-run (APGD-T on a model
    of 3 classes), and runs the attack only at the norms every stage supports."""
    from kwta_robust.config import AttackSpec
    from kwta_robust.errors import ConfigError

    params = {"surrogate": "smooth", "inner": "apgd-ce", "temperature_schedule": [0.1, 0.05],
              "stage_params": [{}, {"inner": "apgd-t"}]}
    spec = AttackSpec(attack="bpda", params=params)
    assert spec.inner_attacks() == ["apgd-ce", "apgd-t"]
    spec.check_classes(10, "attacks[1]")
    with pytest.raises(ConfigError, match="apgd-t"):
        spec.check_classes(3, "attacks[1]")
    cw = AttackSpec(attack="bpda", params={**params, "stage_params": [{}, {"inner": "cw"}]})
    assert cw.supported_norms() == ("l2",)
