"""The protocol line of a BPDA whose stages run different inner attacks merges their settings into one value per
stage (``a/b/c``); a setting one stage's attack does not have was written ``none``, which reads as a setting of None
(no cap, no schedule). It is ``—`` (not applicable) now; a setting of None stays ``none``."""

from __future__ import annotations

from attacks import create_attack
from kwta_robust.protocol import settings_text


def test_a_setting_a_stage_lacks_is_not_applicable() -> None:
    attack = create_attack("bpda", surrogate="smooth", inner="apgd-ce", temperature_schedule=[0.1, 0.05],
                           stage_steps=[3, 4], stage_params=[{}, {"inner": "apgd-t", "n_target_classes": 3}])
    text = settings_text(attack.attack_settings(num_classes=10))
    assert "inner apgd-ce/apgd-t: loss ce/—, steps 3/4, " in text and "n target classes —/3" in text


def test_a_setting_of_none_stays_none() -> None:
    settings = {"surrogate": "smooth", "inner": [{"attack": "a", "cap": None, "steps": 2}, {"attack": "b", "steps": 3},
                                                 {"attack": "a", "cap": None, "steps": 2}]}
    assert settings_text(settings) == "surrogate smooth; inner a/b/a: cap none/—/none, steps 2/3/2"
