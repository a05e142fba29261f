"""``table --protocol`` of a BPDA whose last stage runs its own inner attack (``stage_params[i].inner``) names each
stage's attack, as the legend reads ``a/b/c`` (one value per stage): it wrote ``inner apgd-ce/apgd-t`` for four
stages, as if two."""

from __future__ import annotations

from attacks import create_attack
from kwta_robust.protocol import _items_text


def bpda_settings(last: dict) -> dict:
    attack = create_attack("bpda", surrogate="smooth", inner="apgd-ce", temperature_schedule=[0.05] * 4,
                           stage_steps=[10, 10, 10, 10], stage_keep=[1, 1, 0.5, 0.25], stage_params=[{}, {}, {}, last])
    return attack.attack_settings(10)


def test_a_stage_of_its_own_inner_attack_is_named_per_stage() -> None:
    text = _items_text(bpda_settings({"inner": "apgd-t", "n_target_classes": 3}))
    assert "; inner apgd-ce/apgd-ce/apgd-ce/apgd-t: " in text and "n target classes —/—/—/3" in text
    text = _items_text(bpda_settings({"initial_step": 0.5}))  # one inner attack for every stage: named once
    assert "; inner apgd-ce: loss ce, steps 10, " in text and "initial step 2/2/2/0.5" in text
