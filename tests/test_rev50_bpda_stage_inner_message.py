"""BPDA's per-stage ``inner`` (session 49): a stage whose own inner attack refuses the shared ``inner_params``
names that stage's ``inner`` in the one-line error (:mod:`attacks.bpda`). The entry's ``inner`` is taken out of
``stage_params`` before the stages are built, so the message said ``inner_params`` alone — as if the wrapped attack
(``pgd``, which takes ``step_size``) had refused it."""

from __future__ import annotations

import pytest

from attacks.base import create_attack
from attacks.errors import AttackConfigError


def test_a_stage_inner_refusing_inner_params_is_named_in_the_error() -> None:
    with pytest.raises(AttackConfigError) as caught:
        create_attack("bpda", inner="pgd", inner_params={"step_size": 0.01}, temperature_schedule=[1.0, 0.1],
                      stage_params=[{}, {"inner": "apgd-ce"}])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("inner_params: attack 'apgd-ce': unknown parameter 'step_size'; valid: steps")
    assert "(stage 1 runs its own inner 'apgd-ce'; give the parameters only some stages' inner attacks take in " \
           "those stages' stage_params)" in message


def test_the_wrapped_attack_refusing_inner_params_reads_as_before() -> None:
    with pytest.raises(AttackConfigError, match=r"^inner_params: attack 'pgd': unknown parameter 'rho'"):
        create_attack("bpda", inner="pgd", inner_params={"rho": 0.5}, temperature_schedule=[1.0, 0.1],
                      stage_params=[{}, {"inner": "apgd-ce"}])
