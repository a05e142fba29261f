"""Tests that pin the number-producing paths a mutation-testing round found unguarded: the rounding of percentages,
plain numbers and McNemar p-values (float noise, non-finite values, negative zero, the ``< 1e-6`` and two-decimal
thresholds), the paired comparison at ``n = 0`` and its table row, the Wilson interval's input check and level, the
record lookups across norms, and the cascade bookkeeping without attacks or with unusual flags.

Every expectation is derived from the definition it tests (an exact fraction, a binomial sum with
:func:`math.comb`, a hand-worked interval), never copied from the code's output."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from statistics import NormalDist

import pytest
import torch
from torch import Tensor

from attacks.base import AttackConfigError, ThreatModel, format_eps
from attacks.cascade import CLEAN_WRONG, NEVER_BROKEN, WorstCaseResult, first_broken, robust_mask, run_verified
from attacks.cascade import worst_case
from eval_helpers import make_record, make_result
from kwta_robust.numbers import number_text, p_value_text, percent_text, signed_percent_text
from kwta_robust.paired import PairedComparison, mcnemar_exact_p, paired_comparisons, paired_difference_interval
from kwta_robust.paired import paired_table
from kwta_robust.report import cell_text
from kwta_robust.results import CI_LEVEL, Accuracy, NoiseResult, WorstCase, wilson_interval
from test_cascade import PairModel, Scripted, make_data
from test_paired import kwta_relu_pair

# --- numbers.py ---------------------------------------------------------------------------------------------------


def test_a_percentage_rounds_the_decimal_fractions_half_not_the_floats_product() -> None:
    """23 of 80 is 0.2875 exactly, 28.75%: a half, rounded up to 28.8. The float product ``100 * (23 / 80)`` is
    28.749999999999996, which read digit by digit (or as the exact binary value) rounds down to 28.7."""
    assert percent_text(23 / 80) == "28.8"
    assert percent_text(Accuracy.of(23, 80).accuracy) == "28.8"


def test_non_finite_values_are_written_not_raised() -> None:
    """A skipped unit's accuracy is NaN (``Accuracy.of(0, 0)``); NaN and infinities are written as Python writes
    them, never passed to :class:`~decimal.Decimal` rounding (which raises on an infinity and writes ``NaN``)."""
    nan, inf = math.nan, math.inf
    assert (percent_text(nan), percent_text(inf), percent_text(-inf)) == ("nan", "inf", "-inf")
    assert (number_text(nan), number_text(inf), number_text(-inf)) == ("nan", "inf", "-inf")
    assert (p_value_text(nan), p_value_text(inf)) == ("nan", "inf")
    assert percent_text(Accuracy.of(0, 0).accuracy) == "nan"


def test_plain_numbers_below_zero_keep_every_integer_digit_and_zero_has_no_sign() -> None:
    """``number_text`` writes every integer digit from 1,000 up whatever the sign (-100685, not -1.007e+05), and
    negative zero (``-1.0 * 0.0``, a difference of equal numbers) as ``0``, like zero."""
    assert number_text(-100685.0) == "-100685"
    assert number_text(-1.0 * 0.0) == "0"
    assert number_text(-0.5) == "-0.5"


def test_a_difference_that_rounds_to_zero_is_zero_at_any_precision() -> None:
    """0.001 points (1e-5 as a fraction) is 0.00 at two decimals: zero written at the precision asked for. The
    difference over no samples is NaN, written without a sign (its sign is never asked of the rounded text, which
    :class:`~decimal.Decimal` refuses to order)."""
    assert signed_percent_text(1e-5, 2) == "0.00"
    assert signed_percent_text(-1e-5, 2) == "0.00"
    assert signed_percent_text(0.0125, 2) == "+1.25"
    assert signed_percent_text(math.nan) == "nan"


def _p_text_of_exact(q: Fraction) -> str:
    """The text :func:`p_value_text` documents, from an exact p: ``< 1e-6``; below 0.01 two significant digits
    rounded half up; otherwise two decimals rounded half up (rounding done on the fraction, formatting by Python)."""
    if q < Fraction(1, 10**6):
        return "< 1e-6"
    if q < Fraction(1, 100):
        e = -3  # 10**e <= q < 10**(e + 1)
        while q < Fraction(10) ** e:
            e -= 1
        units = math.floor(q / Fraction(10) ** (e - 1) + Fraction(1, 2))  # two significant digits, 10..100
        return f"{float(Decimal(units).scaleb(e - 1)):.2g}"
    units = math.floor(q * 100 + Fraction(1, 2))
    return f"{units // 100}.{units % 100:02d}"


def test_printed_mcnemar_p_values_are_the_exact_binomial_tails_rounded_half_up() -> None:
    """Every split of up to 40 discordant pairs: the exact two-sided p ``min(1, 2 · Σ_{i<=k} C(m, i) / 2^m)``
    (McNemar 1947, exact binomial form) as a fraction, rounded by the documented rule, is what the table prints.
    The float p carries noise (1 vs 3: 2 · 5 / 16 = 0.625 computes as 0.6249999999999994, printed 0.63, not 0.62),
    and the splits cross both thresholds: 0 vs 20 is 2 / 2^20 = 1.9e-06 (not ``< 1e-6``), 0 vs 9 is
    2 / 512 = 0.0039 (two significant digits, not ``0.00``)."""
    for m in range(41):
        for k in range(m // 2 + 1):
            exact = min(Fraction(1), Fraction(2 * sum(math.comb(m, i) for i in range(k + 1)), 2**m))
            assert p_value_text(mcnemar_exact_p(k, m - k)) == _p_text_of_exact(exact), (k, m - k)
    assert (p_value_text(mcnemar_exact_p(1, 3)), p_value_text(mcnemar_exact_p(0, 20)),
            p_value_text(mcnemar_exact_p(0, 9))) == ("0.63", "1.9e-06", "0.0039")


def test_the_smallest_p_label_is_strictly_below_its_bound() -> None:
    """``< 1e-6`` claims p < 10^-6: p = 10^-6 itself is written with its two significant digits."""
    assert p_value_text(1e-6) == "1e-06"
    assert p_value_text(0.99e-6) == "< 1e-6"


# --- paired.py ----------------------------------------------------------------------------------------------------


def test_a_comparison_over_no_samples_has_no_difference_and_no_interval() -> None:
    """``n = 0`` (two empty selections): no proportion, so the difference and its interval are NaN, not a
    ZeroDivisionError or a 0.0 that reads as "no difference"; with no discordant pairs McNemar's p is 1."""
    assert all(math.isnan(v) for v in paired_difference_interval(0, 0, 0, 0))
    empty = PairedComparison("a", "b", None, None, 0, 0, 0, 0, 0)
    assert math.isnan(empty.difference) and all(math.isnan(v) for v in empty.interval)
    assert empty.p_value == 1.0


def test_the_paired_row_writes_each_count_in_its_column() -> None:
    """relu − kwta at the worst case: both robust 1 (sample 1), only relu 4 (0, 2, 3, 4), only kwta 0, neither 5;
    n = 10, difference (4 - 0) / 10 = +40.0 points; McNemar p = 2 · C(4, 0) / 2^4 = 0.125, printed 0.13.
    Interval (Newcombe 1998, method 10, z = 1.959964): Wilson limits of 5/10 are 0.236593 and 0.763407, of 1/10
    0.017876 and 0.404150; ad - bc = 1 · 5 - 4 · 0 = 5, lowered by n/2 = 5 to 0, so phi = 0;
    lower = 0.4 - sqrt((0.5 - 0.236593)^2 + (0.404150 - 0.1)^2) = 0.4 - 0.402356 = -0.0024 (-0.2 points),
    upper = 0.4 + sqrt((0.763407 - 0.5)^2 + (0.1 - 0.017876)^2) = 0.4 + 0.275913 = 0.6759 (67.6 points); printed
    rounded outward (the lower bound down: -0.24 points is -0.3)."""
    kwta, relu = kwta_relu_pair()
    table = paired_table([relu, kwta])
    rows = [[cell_text(c) for c in row] for row in table.rows]
    assert table.headers[2:] == ["n", "diff (points)", "95% interval", "only first", "only second", "McNemar p"]
    assert rows[1] == ["relu − kwta", "worst case Linf 0.3", "10", "+40.0", "-0.3 to 67.6", "4", "0", "0.13"]
    worst = paired_comparisons([relu, kwta])[1]
    low, high = worst.interval
    assert low < worst.difference < high and (round(low, 4), round(high, 4)) == (-0.0024, 0.6759)


def test_a_threat_point_the_other_record_lacks_is_not_compared() -> None:
    """Only the points both records hold are paired: kwta's eps 0.5 has no counterpart in relu."""
    kwta, relu = kwta_relu_pair()
    kwta = make_record(kwta.results + [make_result("pgd", [0] * 10, eps=0.5)], label="kwta")
    found = paired_comparisons([kwta, relu])
    assert [(c.norm, c.eps_text) for c in found] == [(None, None), ("linf", format_eps(0.3))]


# --- results.py ---------------------------------------------------------------------------------------------------


def test_a_negative_count_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"successes must be in \[0, 10\], got -1"):
        wilson_interval(-1, 10)


def test_the_interval_is_taken_at_the_level_the_record_states() -> None:
    """The z of the Wilson interval is the standard normal quantile of the recorded level, ``0.5 + level / 2``
    (stdlib :class:`statistics.NormalDist`): 1.959964 at 95 %."""
    z = NormalDist().inv_cdf(0.5 + CI_LEVEL / 2)
    assert CI_LEVEL == 0.95 and z == pytest.approx(1.959963984540054, abs=1e-12)
    for k, n in [(0, 7), (30, 40), (117, 120), (9, 9)]:
        assert wilson_interval(k, n) == pytest.approx(wilson_interval(k, n, z), abs=1e-12)


def test_the_wilson_limits_solve_the_score_equation_exactly() -> None:
    """Wilson (1927): the limits are the p with ``|p_hat - p| = z · sqrt(p (1 - p) / n)``; on proportions that are
    no short decimal (1/3, 2/7, 5/13) both limits satisfy it to float precision, so the proportion is used
    unrounded. The accuracy is the exact fraction too."""
    z = NormalDist().inv_cdf(0.975)
    for k, n in [(1, 3), (2, 7), (5, 13)]:
        for limit in wilson_interval(k, n):
            assert abs(k / n - limit) == pytest.approx(z * math.sqrt(limit * (1 - limit) / n), abs=1e-12)
        assert Accuracy.of(k, n).accuracy == k / n


def _worst(norm: str, eps: float, robust: int, n: int = 3) -> WorstCase:
    return WorstCase(norm, eps, format_eps(eps), ["pgd"], Accuracy.of(robust, n), [-1] * robust + [0] * (n - robust))


def test_lookups_tell_the_norms_apart_at_one_eps() -> None:
    """Linf 0.5 and L2 0.5 are two threat points: results, worst cases and their replacement keep them apart."""
    linf = make_result("pgd", [1, 0, 0], norm="linf", eps=0.5)
    l2 = make_result("pgd", [1, 1, 0], norm="l2", eps=0.5)
    rec = make_record([linf, l2])
    assert rec.results_at("l2", 0.5) == [l2] and rec.results_at("linf", 0.5) == [linf]
    assert rec.worst("l2", 0.5).norm == "l2" and rec.worst("l2", 0.5).robust.correct == 2
    assert rec.worst("l2", 0.25) is None and rec.worst("l1", 0.5) is None
    rec.put_worst(_worst("l2", 0.5, 3))
    assert rec.worst("linf", 0.5).robust.correct == 1 and rec.worst("l2", 0.5).robust.correct == 3
    assert len(rec.worst_case) == 2


def test_threat_points_list_the_results_order_then_points_with_a_worst_case_only() -> None:
    a, b = make_result("pgd", [1, 0, 0], eps=0.1), make_result("pgd", [1, 0, 0], eps=0.2)
    rec = make_record([a, b])
    rec.worst_case = [_worst("linf", 0.2, 1), _worst("linf", 0.1, 1), _worst("l2", 1.0, 0)]
    assert rec.threat_points() == [("linf", 0.1), ("linf", 0.2), ("l2", 1.0)]


def test_the_noise_score_is_the_first_numenta_probes_with_a_score() -> None:
    rec = make_record(n=3)
    rec.noise = [NoiseResult("gaussian", [0.1], 1, 0, {"noise_score": 9.0}, 0.1),
                 NoiseResult("numenta", [0.1], 1, 0, {"noise_score": None}, 0.1),
                 NoiseResult("numenta", [0.1], 4, 0, {"noise_score": 378.25}, 0.1),
                 NoiseResult("numenta", [0.1], 1, 0, {"noise_score": 5.0}, 0.1)]
    assert rec.noise_score() == 378.25


@pytest.mark.parametrize("model, label", [({"label": "L", "name": "n", "architecture": "a"}, "L"),
                                          ({"name": "n", "architecture": "a"}, "n"), ({"architecture": "a"}, "a"),
                                          ({"label": "", "name": "n"}, "n"), ({}, "model")])
def test_a_records_label_falls_back_from_label_to_name_to_architecture(model: dict, label: str) -> None:
    rec = make_record(n=1)
    rec.model = model
    assert rec.label == label


# --- attacks/cascade.py -------------------------------------------------------------------------------------------


def _data() -> tuple[Tensor, Tensor]:
    """Four samples, all class 0 by the model; sample 3 labelled 1 (misclassified without attack)."""
    x, y = make_data(4)
    y[3] = 1
    return x, y


def test_without_attacks_the_worst_case_is_the_clean_accuracy() -> None:
    """No attack: every clean-correct sample is robust (never broken), the misclassified one CLEAN_WRONG."""
    x, y = _data()
    res = worst_case(PairModel(), x, y, ThreatModel("linf", 0.1), [])
    assert res.flags.shape == (0, 4) and res.names == []
    assert res.robust.tolist() == [True, True, True, False]
    assert res.first_broken_by.tolist() == [NEVER_BROKEN] * 3 + [CLEAN_WRONG]
    assert res.robust_accuracy == 3 / 4
    one = worst_case(PairModel(), x, y, ThreatModel("linf", 0.1), [Scripted("only", {1})])
    assert one.names == ["only"] and one.first_broken_by.tolist() == [NEVER_BROKEN, 0, NEVER_BROKEN, CLEAN_WRONG]


def test_a_sample_not_run_is_not_broken_and_the_first_zero_names_the_attack() -> None:
    """The documented rules on the flags themselves: robust = clean-correct and no flag 0 (a -1, not run, is no
    break); first broken = the first attack with flag 0; a misclassified sample is CLEAN_WRONG whatever its flags."""
    clean_correct = torch.tensor([True, True, True, False])
    flags = torch.tensor([[-1, 1, -1, 0], [1, 0, 0, 0]], dtype=torch.int8)
    assert robust_mask(clean_correct, list(flags)).tolist() == [True, False, False, False]
    assert first_broken(clean_correct, flags).tolist() == [NEVER_BROKEN, 1, 1, CLEAN_WRONG]


def test_the_robust_accuracy_of_no_samples_is_nan() -> None:
    empty = torch.zeros(0, dtype=torch.bool)
    res = WorstCaseResult("cascade", [], empty, torch.zeros((0, 0), dtype=torch.int8), empty,
                          torch.zeros(0, dtype=torch.long))
    assert math.isnan(res.robust_accuracy)


def test_clean_correct_given_as_integers_counts_like_booleans() -> None:
    """``clean_correct`` as 0/1 integers (``(pred == y).to(torch.uint8)``) is a mask, not indices."""
    x, y = _data()
    attacks = [Scripted("a", {0})]
    as_bool = worst_case(PairModel(), x, y, ThreatModel("linf", 0.1), attacks,
                         clean_correct=torch.tensor([True, True, True, False]))
    as_int = worst_case(PairModel(), x, y, ThreatModel("linf", 0.1), attacks,
                        clean_correct=torch.tensor([1, 1, 1, 0], dtype=torch.uint8))
    assert as_int.first_broken_by.tolist() == as_bool.first_broken_by.tolist() == [0, NEVER_BROKEN, NEVER_BROKEN,
                                                                                   CLEAN_WRONG]
    assert torch.equal(as_int.robust, as_bool.robust)


def test_a_negative_resumed_attack_index_is_refused() -> None:
    """completed = {-1: flags} names no attack of the list: silently ignoring it would rerun the attack it meant."""
    x, y = _data()
    with pytest.raises(AttackConfigError, match="attack index -1 out of range"):
        worst_case(PairModel(), x, y, ThreatModel("linf", 0.1), [Scripted("a", set())],
                   completed={-1: torch.ones(4, dtype=torch.int8)})


def test_resumed_flags_are_int8_of_shape_n_whatever_they_were_given_as() -> None:
    """Flags read back from a record's JSON list arrive as int64: the result's flags stay ``int8`` ``[A, N]``. Flags
    shaped ``[N, 1]`` (one column per sample) are refused by name, not left to fail in :func:`torch.stack`."""
    x, y = _data()
    attacks = [Scripted("a", {0}), Scripted("b", {1})]
    full = worst_case(PairModel(), x, y, ThreatModel("linf", 0.1), attacks)
    resumed = worst_case(PairModel(), x, y, ThreatModel("linf", 0.1), attacks,
                         completed={0: torch.tensor(full.flags[0].tolist())})
    assert resumed.flags.dtype == torch.int8 and torch.equal(resumed.flags, full.flags)
    with pytest.raises(AttackConfigError, match=r"expected flags of shape \[4\], got \(4, 1\)"):
        worst_case(PairModel(), x, y, ThreatModel("linf", 0.1), attacks, completed={0: full.flags[0][:, None]})


def test_a_batch_size_of_zero_is_refused() -> None:
    x, y = _data()
    with pytest.raises(AttackConfigError, match="batch_size: must be >= 1, got 0"):
        run_verified(PairModel(), Scripted("a", set()), x, y, ThreatModel("linf", 0.1), batch_size=0)
