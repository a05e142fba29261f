"""A bad per-stage entry of a BPDA attack in an eval config is one line led by its config path
(``attacks[1].params.stage_params[2].inner``) and the fix; it read ``attacks[1]: stage_params[2].inner: ...``, and
a stage's inner attack refusing its parameters blamed ``inner_params / stage_params`` alike."""

from __future__ import annotations

import pytest

from attacks import create_attack
from attacks.base import AttackConfigError
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError


def config(stage_params: list, **bpda: object) -> dict:
    params = {"surrogate": "smooth", "inner": "apgd-ce", "temperature_schedule": [0.1, 0.05, 0.03],
              "stage_steps": [2, 2, 2], "stage_params": stage_params, **bpda}
    return {"dataset": "mnist5k", "threats": [{"norm": "linf", "epsilons": [0.1]}],
            "attacks": [{"attack": "pgd", "params": {"steps": 5}}, {"attack": "bpda", "params": params}]}


@pytest.mark.parametrize(("stage_params", "message"), [
    ([{}, {}, {"inner": "apgd-x"}], "attacks[1].params.stage_params[2].inner: unknown attack 'apgd-x'; known attacks"),
    ([{}, {"inner": "square"}, {}], "attacks[1].params.stage_params[1].inner: 'square' is a black-box attack; BPDA "
                                    "wraps a gradient attack like 'pgd'"),
    ([{}, {"inner": "fgsm"}, {}], "attacks[1].params.stage_steps[1]: stage 1's inner attack 'fgsm' has no 'steps' "
                                  "budget; make that entry null"),
    ([{}, {}, {"inner": "pgd", "initial_step": 0.5}], "attacks[1].params.stage_params[2]: attack 'pgd': unknown "
                                                      "parameter 'initial_step'"),
])
def test_a_bad_stage_entry_is_named_by_its_config_path(stage_params: list, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EvalConfig.from_dict(config(stage_params))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_inner_params_a_stage_s_own_inner_refuses_are_blamed_with_the_fix() -> None:
    with pytest.raises(AttackConfigError) as caught:
        create_attack("bpda", surrogate="smooth", inner="apgd-ce", inner_params={"initial_step": 0.5},
                      temperature_schedule=[0.1, 0.05], stage_steps=[2, 2], stage_params=[{}, {"inner": "pgd"}])
    assert str(caught.value).startswith("inner_params: attack 'pgd': unknown parameter 'initial_step'")
    assert str(caught.value).endswith("(stage 1 runs its own inner 'pgd'; give the parameters only some stages' "
                                      "inner attacks take in those stages' stage_params)")
    with pytest.raises(AttackConfigError, match=r"^stage_params\[1\]: 'seed' is set per stage by BPDA"):
        create_attack("bpda", surrogate="smooth", temperature_schedule=[0.1, 0.05], stage_params=[{}, {"seed": 1}])
