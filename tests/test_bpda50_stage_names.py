"""A staged BPDA whose stages run different inner attacks (``stage_params[i].inner``) is named after every one of
them, once each in stage order (``bpda-smooth+apgd-ce/apgd-t``): it was named after ``inner`` alone, as if every
stage ran it. One inner attack keeps the old name (logs, messages and the quickstart unchanged); the config's
messages name every inner attack too."""

from __future__ import annotations

from attacks import create_attack
from kwta_robust.config import AttackSpec


def staged(stage_params: list) -> object:
    return create_attack("bpda", surrogate="smooth", inner="apgd-ce", temperature_schedule=[0.1, 0.05, 0.03],
                         stage_steps=[2, 2, 2], stage_params=stage_params)


def test_the_name_shows_every_stage_s_inner_attack_once() -> None:
    assert staged([{}, {}, {"inner": "apgd-t"}]).name == "bpda-smooth+apgd-ce/apgd-t"
    assert staged([{"inner": "pgd"}, {}, {"inner": "pgd"}]).name == "bpda-smooth+pgd/apgd-ce"
    assert staged([{}, {"inner": "apgd-ce"}, {"initial_step": 0.5}]).name == "bpda-smooth+apgd-ce"  # as before


def test_config_messages_name_every_inner_attack() -> None:
    params = {"surrogate": "smooth", "inner": "apgd-ce", "temperature_schedule": [0.1, 0.05],
              "stage_params": [{}, {"inner": "cw"}]}
    assert AttackSpec(attack="bpda", params=params).inner_text() == " with inner 'apgd-ce/cw'"
    assert AttackSpec(attack="bpda", params={"inner": "cw"}).inner_text() == " with inner 'cw'"
