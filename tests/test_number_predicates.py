"""One reading of "an integer" and "a finite number" for every check of both packages
(:func:`attacks.errors.is_whole_number`, :func:`attacks.errors.is_finite_number`), and the checks that
used to crash on an integer too large for a float (``math.isfinite(10**400)`` raises ``OverflowError``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attacks.adaptive import _positive_or_none
from attacks.bpda_temperature import _positive
from attacks.errors import AttackConfigError, check_int_param, check_positive_param, is_finite_number, is_whole_number
from attacks.noise import _validate, create_noise_probe
from kwta_robust.errors import ConfigError
from kwta_robust.errors import is_finite_number as reexported_finite
from kwta_robust.errors import is_whole_number as reexported_whole
from kwta_robust.sparsity.allocation import check_sparsity
from kwta_robust.sweep.manifest import manifest_problem
from kwta_robust.sweep.placement import _resource

HUGE = 10**400  # an exact Python int no float can hold


@pytest.mark.parametrize("value, at_least, expected", [
    (0, None, True), (-7, None, True), (3, 3, True), (2, 3, False), (0, 0, True), (-1, 0, False),
    (HUGE, 1, True),                    # a count has no upper bound here; the fields that need one check it
    (True, None, False), (False, 0, False),  # True is an int to Python, never a count
    (1.0, None, False), ("1", None, False), (None, None, False), (np.int64(3), None, False),
])
def test_is_whole_number(value: object, at_least: int | None, expected: bool) -> None:
    assert is_whole_number(value, at_least) is expected


@pytest.mark.parametrize("value, expected", [
    (0, True), (-2, True), (1.5, True), (np.float64(0.25), True),   # NumPy's float64 is a float
    (10**300, True),                                                   # an int a float can hold
    (HUGE, False), (math.nan, False), (math.inf, False), (-math.inf, False),
    (True, False), ("1", False), (None, False), ([1.0], False),
])
def test_is_finite_number(value: object, expected: bool) -> None:
    assert is_finite_number(value) is expected


def test_kwta_robust_errors_reexports_the_same_predicates() -> None:
    assert reexported_whole is is_whole_number and reexported_finite is is_finite_number


def test_attack_parameter_checks_give_one_line_for_an_integer_beyond_float_range() -> None:
    # Before: check_positive_param raised a raw "OverflowError: int too large to convert to float".
    with pytest.raises(AttackConfigError, match=r"^attack 'pgd': alpha must be a finite number > 0, got 1000"):
        check_positive_param("pgd", "alpha", HUGE)
    with pytest.raises(AttackConfigError, match=r"^attack 'pgd': steps must be an integer >= 1, got True$"):
        check_int_param("pgd", "steps", True)
    assert check_int_param("pgd", "steps", 4) == 4
    assert check_positive_param("pgd", "alpha", 0, allow_zero=True) == 0.0


def test_noise_levels_and_gradient_estimation_refuse_an_integer_beyond_float_range() -> None:
    with pytest.raises(AttackConfigError, match=r"^noise: levels must be finite numbers >= 0, got 1000"):
        _validate(create_noise_probe("gaussian"), [HUGE], 1, 1)
    assert _validate(create_noise_probe("gaussian"), [0, 0.5], 1, 1) == (0.0, 0.5)
    with pytest.raises(AttackConfigError, match=r"^sigma: must be a number > 0"):
        _positive_or_none("sigma", HUGE)
    assert _positive_or_none("sigma", 2) == 2.0


def test_bpda_temperature_is_a_finite_positive_number() -> None:
    # Before: 10**400 passed (0 < 10**400 < inf holds for Python ints), then float() overflowed later.
    assert [_positive(v) for v in (0.5, 3, HUGE, 0, -1.0, math.inf, math.nan, True)] == [
        True, True, False, False, False, False, False, False]


def test_config_numbers_beyond_float_range_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=r"^executor\.gpus_per_cell: expected a finite number >= 0, got 1000"):
        _resource(HUGE, "gpus_per_cell")
    assert _resource(0.5, "gpus_per_cell") == 0.5
    with pytest.raises(ValueError, match=r"^sparsity must be a number in \[0, 1\), got 1000"):
        check_sparsity(HUGE)


def test_sweep_manifest_counts() -> None:
    assert manifest_problem({"runs": 2, "cells": [{"attempts": 0}, {}]}) is None
    assert manifest_problem({"runs": True, "cells": []}) == "runs: expected a count, got True"
    assert manifest_problem({"runs": 1, "cells": [{"attempts": -1}]}) == "cells[0].attempts: expected a count, got -1"
