"""Mutation review (mut51) of :mod:`kwta_robust.numbers`' outward rounding: mutants the older tests let through.

A paired difference's interval (:func:`kwta_robust.paired.paired_difference_interval`, written in points by
:func:`interval_percent_texts`) has a negative lower bound as often as not: rounded outward it goes down, away from
zero (-1.23 points is ``-1.3``, not the ``-1.2`` that rounding to nearest or toward zero writes). ``digits`` applies
to both bounds."""

from __future__ import annotations

from kwta_robust.numbers import bound_number_text, interval_percent_texts, lower_bound_percent_text, \
    upper_bound_percent_text


def test_negative_lower_bound_is_rounded_down_away_from_zero() -> None:
    """-0.0123 (-1.23 points) as a lower bound is -1.3; the upper -0.0127 is -1.2 (toward zero, i.e. up)."""
    assert lower_bound_percent_text(-0.0123) == "-1.3"
    assert upper_bound_percent_text(-0.0127) == "-1.2"
    assert interval_percent_texts(-0.0123, -0.0127 + 0.02) == ("-1.3", "0.8")


def test_interval_digits_apply_to_both_bounds() -> None:
    """``digits=2``: 0.123456–0.654321 is 12.34–65.44 (both bounds to two decimals, outward)."""
    assert interval_percent_texts(0.123456, 0.654321, digits=2) == ("12.34", "65.44")
    assert interval_percent_texts(-0.123456, -0.054321, digits=0) == ("-13", "-5")


def test_bound_number_text_outward_on_both_signs() -> None:
    """A lower bound goes down and an upper up on either side of zero; a bound that rounds to zero is 0.00."""
    assert bound_number_text(-2.4637, upper=False) == "-2.47"
    assert bound_number_text(-2.4637, upper=True) == "-2.46"
    assert bound_number_text(2.4637, upper=False) == "2.46"
    assert bound_number_text(2.4637, upper=True) == "2.47"
    assert bound_number_text(-0.001, upper=True) == "0.00"
    assert bound_number_text(-0.0, upper=False) == "0.00"
    assert bound_number_text(2.4637, upper=True, places=3) == "2.464"


def test_bound_number_text_guard_is_float_noise_only() -> None:
    """Within 1e-10 of the grid a bound counts as on it (0.1 + 0.2 is 0.30 as an upper bound); 1e-5 off the grid is
    a real distance and rounds outward (2.46001 as an upper bound is 2.47, 2.45999 as a lower 2.45)."""
    assert bound_number_text(0.1 + 0.2, upper=True) == "0.30"
    assert bound_number_text(2.46001, upper=True) == "2.47"
    assert bound_number_text(2.45999, upper=False) == "2.45"
