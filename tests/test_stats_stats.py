"""The statistics a paper quotes, against references written here from the papers' formulas (pure Python; scipy checks
some of them in test_readme_stats.py): the 95% Wilson score interval (Wilson 1927) and the z behind it, the paired-
difference interval (Newcombe 1998, method 10, with its continuity correction of phi), McNemar's exact p (McNemar
1947), the way their numbers are printed (bounds rounded to the nearest 0.1 point, halves up; p-values, ``< 1e-6``),
Numenta's noise score (Ahmad & Scheinkman 2019, as the README defines it) and the budget check's exact lower bound of
the drop (hypergeometric; Clopper & Pearson 1934 in the limit) and its coverage. The references work in exact or
50-digit arithmetic (:mod:`fractions`, :mod:`decimal`), so a disagreement is the code's float error or a wrong
formula, never the reference's. Grids cover n = 1, 0 and all successes, no discordant pairs, one discordant pair,
discordance on one side only, large n (10^6 and beyond) and levels other than 95%."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
import torch

from attacks.noise import NoiseProbeResult, default_levels
from eval_helpers import make_result
from kwta_robust.budget_check import PlannedRerun, judge, kills_lower_bound
from kwta_robust.diagnostics import Thresholds
from kwta_robust.errors import KwtaRobustError
from kwta_robust.numbers import p_value_text, percent_text
from kwta_robust.paired import mcnemar_exact_p, paired_difference_interval
from kwta_robust.report import Cell, cell_text
from kwta_robust.results import CI_LEVEL, Accuracy, wilson_interval

PRECISION = 50  # decimal digits of the references


def normal_quantile(q: float) -> float:
    """The standard normal quantile by bisection on ``Phi(x) = erfc(-x / sqrt 2) / 2`` (no inverse formula shared
    with the code or :class:`statistics.NormalDist`)."""
    low, high = -40.0, 40.0
    for _ in range(200):
        mid = (low + high) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def wilson_reference(k: int, n: int, z: float) -> tuple[Decimal, Decimal]:
    """Wilson (1927): the limits are the roots ``p`` of ``(p_hat - p)^2 = z^2 p (1 - p) / n``, i.e. of
    ``(1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0``, solved in 50-digit decimals."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        zz, p = Decimal(z) ** 2, Decimal(k) / Decimal(n)
        a, b = 1 + zz / n, -(2 * p + zz / n)
        root = (b * b - 4 * a * p * p).sqrt()
        return (-b - root) / (2 * a), (-b + root) / (2 * a)


def newcombe_reference(a: int, b: int, c: int, d: int, z: float) -> tuple[Decimal, Decimal]:
    """Newcombe (1998), method 10, from the paper's formulas: ``theta = A - B`` with ``A = (a + b) / n`` and
    ``B = (a + c) / n``, Wilson limits ``l2, u2`` of ``A`` and ``l3, u3`` of ``B``, ``phi = (ad - bc) / sqrt(efgh)``
    over the four margins (0 when one is 0) with ``ad - bc`` lowered by ``n / 2``, not below 0, when positive;
    ``L = theta - sqrt(dl2^2 - 2 phi dl2 du3 + du3^2)``, ``U = theta + sqrt(du2^2 - 2 phi du2 dl3 + dl3^2)``."""
    n = a + b + c + d
    with localcontext() as ctx:
        ctx.prec = PRECISION
        big_a, big_b = Decimal(a + b) / n, Decimal(a + c) / n
        (l2, u2), (l3, u3) = wilson_reference(a + b, n, z), wilson_reference(a + c, n, z)
        margins = (a + b) * (c + d) * (a + c) * (b + d)
        cross = Decimal(a * d - b * c)
        if cross > 0:
            cross = max(cross - Decimal(n) / 2, Decimal(0))
        phi = cross / Decimal(margins).sqrt() if margins else Decimal(0)
        dl2, du2, dl3, du3 = big_a - l2, u2 - big_a, big_b - l3, u3 - big_b
        below = (dl2 * dl2 - 2 * phi * dl2 * du3 + du3 * du3).sqrt()
        above = (du2 * du2 - 2 * phi * du2 * dl3 + dl3 * dl3).sqrt()
        return big_a - big_b - below, big_a - big_b + above


def mcnemar_exact(b: int, c: int) -> Fraction:
    """The exact two-sided McNemar p, ``min(1, 2 P[Bin(b + c, 1/2) <= min(b, c)])``, summed in integers (binomial
    coefficients by their exact recurrence)."""
    m, k = b + c, min(b, c)
    if m == 0:
        return Fraction(1)
    term, total = 1, 0
    for i in range(k + 1):
        total += term
        term = term * (m - i) // (i + 1)
    return min(Fraction(1), Fraction(2 * total, 2 ** m))


def mcnemar_reference(b: int, c: int) -> float:
    return float(mcnemar_exact(b, c))


def half_up(value: Fraction | Decimal, quantum: Fraction) -> Fraction:
    """``value`` rounded to a multiple of ``quantum``, halves up (the papers' rounding), exactly."""
    return Fraction(math.floor(Fraction(value) / quantum + Fraction(1, 2))) * quantum


def shown(text: str) -> Fraction:
    return Fraction(Decimal(text))


#: (successes, n) over every count up to n = 30 and the edges of large n.
WILSON_GRID = [(k, n) for n in range(1, 31) for k in range(n + 1)] + [
    (k, n) for n in (1000, 10 ** 6, 10 ** 9) for k in (0, 1, 2, n // 3, n // 2, n - 2, n - 1, n)]


def test_the_95_percent_z_is_the_normal_quantile_of_the_recorded_level() -> None:
    z = normal_quantile(0.5 + CI_LEVEL / 2)
    assert CI_LEVEL == 0.95 and abs(z - 1.959963984540054) < 1e-12
    for k, n in [(0, 1), (1, 1), (27, 48), (999_999, 10 ** 6)]:
        assert wilson_interval(k, n) == pytest.approx(wilson_interval(k, n, z), abs=1e-12)


@pytest.mark.parametrize("level", [0.8, 0.9, 0.95, 0.99, 0.999])
def test_the_wilson_interval_solves_the_score_equation_over_the_grid(level: float) -> None:
    """Both limits to float precision (relative 1e-12, absolute 1e-15 next to 0) at every level; 0 successes give
    a lower limit of exactly 0 and n successes an upper limit of exactly 1."""
    z = normal_quantile(0.5 + level / 2)
    for k, n in WILSON_GRID:
        got = wilson_interval(k, n, z)
        for value, exact in zip(got, wilson_reference(k, n, z)):
            assert abs(value - float(exact)) <= 1e-12 * float(exact) + 1e-15, (level, k, n, got)
        assert (got[0] == 0.0) == (k == 0) and (got[1] == 1.0) == (k == n)
        assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_n_equals_one_has_the_closed_form_limits() -> None:
    """One sample: the score equation ``p^2 = z^2 p (1 - p)`` gives ``(0, z^2 / (1 + z^2))`` for a miss and
    ``(1 / (1 + z^2), 1)`` for a hit (79.35% and 20.65% at 95%, printed outward: 79.4 and 20.6): one sample says
    almost nothing."""
    z2 = normal_quantile(0.975) ** 2
    assert wilson_interval(0, 1) == pytest.approx((0.0, z2 / (1 + z2)), abs=1e-15)
    assert wilson_interval(1, 1) == pytest.approx((1 / (1 + z2), 1.0), abs=1e-15)
    assert cell_text(Cell.acc(Accuracy.of(0, 1))) == "0.0 (0.0–79.4)"
    assert cell_text(Cell.acc(Accuracy.of(1, 1))) == "100.0 (20.6–100.0)"


def test_printed_accuracies_and_bounds_are_the_exact_values_rounded_half_up() -> None:
    """``67.5 (60.7–73.7)``: the accuracy is the exact fraction rounded to the nearest 0.1 point, halves up, and the
    bounds are the exact 50-digit Wilson limits rounded outward (the lower down, the upper up: outward50, never
    narrower than computed) — no float noise moves a bound across a rounding edge, over every count at n = 1..60,
    200 and 1000."""
    tenth = Fraction(1, 10)
    z = normal_quantile(0.975)
    for n in [*range(1, 61), 200, 1000]:
        for k in range(n + 1):
            low, high = wilson_reference(k, n, z)
            expected = [half_up(Fraction(100 * k, n), tenth), Fraction(math.floor(Fraction(1000 * low))) * tenth,
                        Fraction(math.ceil(Fraction(1000 * high))) * tenth]
            text = cell_text(Cell.acc(Accuracy.of(k, n)))
            value, bounds = text[:-1].split(" (")
            assert [shown(value), *map(shown, bounds.split("–"))] == expected, (k, n, text)


def test_an_exact_half_point_rounds_up_as_papers_round() -> None:
    """27/48 = 56.25% prints 56.3 and 5/16 = 31.25% prints 31.3 (Python's format rounds halves to even: 56.2)."""
    assert percent_text(27 / 48) == "56.3" and percent_text(5 / 16) == "31.3" and percent_text(1 / 16) == "6.3"


# --- McNemar ------------------------------------------------------------------------------------------------------


def test_mcnemar_is_the_exact_binomial_sum_over_every_split_up_to_60_discordant_pairs() -> None:
    """Every ``(b, c)`` with ``b + c <= 60``: none (p = 1), one (p = 1), all on one side (``2^(1 - m)``), ties."""
    for m in range(61):
        for b in range(m + 1):
            assert mcnemar_exact_p(b, m - b) == pytest.approx(mcnemar_reference(b, m - b), rel=1e-12, abs=0), (b, m)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(1, 0) == 1.0 and mcnemar_exact_p(0, 1) == 1.0
    assert all(mcnemar_exact_p(k, k) == 1.0 for k in (1, 7, 500))
    assert all(mcnemar_exact_p(m, 0) == pytest.approx(2.0 ** (1 - m), rel=1e-12) for m in range(1, 60))


def test_mcnemar_at_large_counts() -> None:
    """Tens of thousands of discordant pairs keep eight digits (the log-gamma terms lose a few: relative error about
    m times the float epsilon); a million on one side is 2^(1 - 10^6), below every float."""
    for b, c in [(25_300, 24_700), (10_050, 9_950), (10_500, 9_500)]:
        assert mcnemar_exact_p(b, c) == pytest.approx(mcnemar_reference(b, c), rel=1e-8)
    assert mcnemar_exact_p(10 ** 6, 0) == 0.0 and p_value_text(mcnemar_exact_p(10 ** 6, 0)) == "< 1e-6"
    assert mcnemar_exact_p(500_000, 500_000) == 1.0


def p_text_reference(exact: Fraction) -> Fraction | None:
    """The value a p-value should print: ``None`` for ``< 1e-6``; two significant digits below 0.01, two decimals
    from 0.01 up, halves up, of the exact p."""
    if exact < Fraction(1, 10 ** 6):
        return None
    if exact >= Fraction(1, 100):
        return half_up(exact, Fraction(1, 100))
    exponent = -1
    while exact < Fraction(1, 10 ** -exponent):
        exponent -= 1
    return half_up(exact, Fraction(1, 10 ** (1 - exponent)))


def test_printed_p_values_are_the_exact_p_rounded_and_less_than_1e6_means_it() -> None:
    """Every McNemar p up to 60 discordant pairs: ``< 1e-6`` exactly when p < 10^-6 (20 of 20 on one side is
    1.9e-06, 21 of 21 is ``< 1e-6``), otherwise the printed number is the exact p rounded (half up) at the shown
    digit — also at the ties 1/8, 3/8, 5/8 and 7/8 (0.13, 0.38, 0.63, 0.88), where the float p is a few units in
    the last place off (1 of 4 discordant: 0.6249999999999994) and the text rounds its float noise away first."""
    for m in range(61):
        for b in range(m // 2 + 1):
            text, expected = p_value_text(mcnemar_exact_p(b, m - b)), p_text_reference(mcnemar_exact(b, m - b))
            assert (text == "< 1e-6") if expected is None else shown(text) == expected, (b, m, text)
    assert p_value_text(mcnemar_exact_p(20, 0)) == "1.9e-06" and p_value_text(mcnemar_exact_p(21, 0)) == "< 1e-6"


# --- Newcombe (1998), method 10 -----------------------------------------------------------------------------------


def test_the_paired_interval_is_method_10_over_every_table_up_to_n_10() -> None:
    """All 1,000 tables ``(a, b, c, d)`` with ``1 <= n <= 10``: n = 1, no discordant pairs, one discordant pair,
    discordance on one side only, zero margins (phi = 0) and the continuity correction of phi all occur."""
    z = normal_quantile(0.975)
    tables = [(a, b, c, n - a - b - c) for n in range(1, 11) for a in range(n + 1) for b in range(n + 1 - a)
              for c in range(n + 1 - a - b)]
    assert len(tables) == 1000
    for table in tables:
        got = paired_difference_interval(*table)
        exact = newcombe_reference(*table, z)
        assert got == pytest.approx(tuple(map(float, exact)), abs=1e-13), table


@pytest.mark.parametrize("table", [
    (10 ** 6, 0, 0, 0), (0, 0, 0, 10 ** 6), (0, 10 ** 6, 0, 0), (999_999, 1, 0, 0), (0, 1, 0, 999_999),
    (250_000, 250_000, 250_000, 250_000), (400_000, 100, 50, 599_850), (500_000, 0, 500_000, 0)])
def test_the_paired_interval_at_a_million_pairs(table: tuple[int, int, int, int]) -> None:
    """Large n: the limits keep about 11 digits of a width of a few 1e-6 (relative 1e-9 of the width)."""
    got = paired_difference_interval(*table)
    exact = tuple(map(float, newcombe_reference(*table, normal_quantile(0.975))))
    assert got == pytest.approx(exact, abs=1e-9 * max(exact[1] - exact[0], 1e-6)), table


def test_the_continuity_correction_only_lowers_a_positive_cross_product() -> None:
    """``ad - bc`` in ``(0, n/2]`` gives phi = 0, the square-and-add of the two Wilson intervals as if the proportions
    were independent: (1, 1, 7, 12) has ``ad - bc = 5 <= 10.5``; a negative one is kept: (2, 9, 8, 1) has ``-70``."""
    z = normal_quantile(0.975)
    (l2, u2), (l3, u3) = wilson_reference(2, 21, z), wilson_reference(8, 21, z)
    a, b = Fraction(2, 21), Fraction(8, 21)
    theta = float(a - b)
    below = math.hypot(float(a - Fraction(l2)), float(Fraction(u3) - b))
    above = math.hypot(float(Fraction(u2) - a), float(b - Fraction(l3)))
    assert paired_difference_interval(1, 1, 7, 12) == pytest.approx((theta - below, theta + above), abs=1e-13)
    assert paired_difference_interval(2, 9, 8, 1) == pytest.approx(
        tuple(map(float, newcombe_reference(2, 9, 8, 1, z))), abs=1e-13)


# --- noise score --------------------------------------------------------------------------------------------------


def test_the_noise_score_is_the_readmes_total_correct_over_levels_averaged_over_draws() -> None:
    """README / :mod:`attacks.noise`: correct classifications summed over the levels ``0.00, 0.05, ..., 0.50``
    (eleven, the clean level included, as in Ahmad & Scheinkman 2019) and averaged over draws; per image and level
    it is divided by ``levels x n``."""
    levels = default_levels("numenta")
    assert [Fraction(str(v)) for v in levels] == [Fraction(i, 20) for i in range(11)]
    n, draws = 4, 3
    counts = torch.tensor([[(i + j) % (draws + 1) for j in range(n)] for i in range(len(levels))])
    result = NoiseProbeResult("numenta", levels, draws, 0, {}, n, tuple(float(c.sum()) / (draws * n) for c in counts),
                              (), counts)
    total = sum(sum((i + j) % (draws + 1) for j in range(n)) for i in range(len(levels)))
    assert result.noise_score == pytest.approx(total / draws, rel=1e-15)
    assert result.noise_score_normalized == pytest.approx(total / draws / (len(levels) * n), rel=1e-15)
    assert result.to_dict()["noise_score"] == pytest.approx(sum(result.accuracy) * n, rel=1e-12)


# --- budget check -------------------------------------------------------------------------------------------------
ALPHA = Fraction(1, 40)  # one-sided 97.5%


def hypergeometric_pmf(j: int, population: int, kills: int, sampled: int) -> Fraction:
    """``P(X = j)``: ``j`` of the ``kills`` among ``population`` in a sample of ``sampled`` drawn without
    replacement."""
    if not 0 <= j <= kills or not 0 <= sampled - j <= population - kills:
        return Fraction(0)
    return Fraction(math.comb(kills, j) * math.comb(population - kills, sampled - j), math.comb(population, sampled))


def kills_bound_reference(broken: int, sampled: int, population: int) -> int:
    """The smallest kill count not rejected at ``alpha``: ``P(X >= broken | R) = 1 - P(X < broken | R) > alpha``,
    scanned upwards in exact fractions (no bisection, no shared arithmetic with the code)."""
    return next(r for r in range(population + 1)
                if 1 - sum(hypergeometric_pmf(j, population, r, sampled) for j in range(broken)) > ALPHA)


def clopper_pearson_lower(k: int, n: int, alpha: float = 0.025) -> float:
    """Clopper & Pearson (1934): the ``p`` with ``P(Binomial(n, p) >= k) = alpha``, by bisection on the binomial
    tail (no scipy), 0 for ``k = 0``."""
    low, high = 0.0, 1.0
    for _ in range(100):
        mid = (low + high) / 2
        tail = sum(math.comb(n, j) * mid ** j * (1 - mid) ** (n - j) for j in range(k, n + 1))
        low, high = (mid, high) if tail < alpha else (low, mid)
    return 0.0 if k == 0 else (low + high) / 2


def test_the_kills_bound_is_the_exact_hypergeometric_bound() -> None:
    """``kills_lower_bound``: exact values (1 of 1 drawn of 40: ``P(X >= 1 | 1) = 1/40`` is alpha itself, rejected,
    so 2; 1 of 4 of 121: only the kill seen), the census (every survivor drawn: the kills seen) and nothing broken
    (0), a grid against the fractions reference, and for a population far larger than the sample the
    Clopper-Pearson bound on the rate (1 of 3: 1 - 0.975^(1/3) = 0.0084038; 2 of 8, 5 of 20)."""
    assert kills_lower_bound(1, 1, 40) == 2 and kills_lower_bound(1, 1, 41) == 2 and kills_lower_bound(1, 1, 39) == 1
    assert kills_lower_bound(1, 4, 121) == 1 and kills_lower_bound(2, 4, 46) == 4 and kills_lower_bound(6, 20, 50) == 8
    assert [kills_lower_bound(k, 16, 16) for k in (0, 3, 16)] == [0, 3, 16]
    assert kills_lower_bound(0, 8, 500) == 0 and kills_lower_bound(0, 0, 50) == 0
    for population in (1, 2, 5, 9, 17, 30):
        for sampled in range(population + 1):
            for broken in range(sampled + 1):
                assert kills_lower_bound(broken, sampled, population) == \
                    kills_bound_reference(broken, sampled, population), (broken, sampled, population)
    big = 10 ** 6
    assert clopper_pearson_lower(1, 3) == pytest.approx(1 - 0.975 ** (1 / 3), abs=1e-12)
    assert clopper_pearson_lower(1, 3) == pytest.approx(0.0084038, abs=1e-7)
    for k, n in ((1, 3), (2, 8), (5, 20)):
        assert kills_lower_bound(k, n, big) / big == pytest.approx(clopper_pearson_lower(k, n), abs=2e-5)
    with pytest.raises(KwtaRobustError, match="sampled"):
        kills_lower_bound(5, 4, 10)


def _plan(sampled: int, survivors: int, closest: int) -> PlannedRerun:
    r = make_result("pgd", [1] * 200, eps=0.1, params={"steps": 20})
    return PlannedRerun(r, {"steps": 60}, survivors, list(range(sampled)), 100.0, list(range(closest)))


@pytest.mark.parametrize("sampled, survivors, closest, broken", [
    (20, 50, 0, [0, 1, 2, 3, 4, 5]), (16, 80, 12, [0, 12]), (16, 80, 12, [12]), (8, 8, 0, [1]), (32, 120, 24, []),
    (32, 120, 24, [0, 1, 2, 24, 25]), (16, 16, 12, [0, 15])])
def test_the_budget_bound_is_the_closest_kills_plus_the_exact_bound_on_the_random_stratum(
        sampled: int, survivors: int, closest: int, broken: list[int]) -> None:
    """``(k_c + R_L) / n`` with ``R_L`` the exact one-sided 97.5% lower bound of the kills among the ``S - h``
    survivors the random part was drawn from (0 with no random part), and the estimate
    ``(k_c + k_r (S - h) / (m - h)) / n``."""
    n = 200
    ev = judge(_plan(sampled, survivors, closest), broken, 1, n, 0, 3, Thresholds()).evidence
    k_close = sum(i < closest for i in broken)
    k_rand, m_rand = len(broken) - k_close, sampled - closest
    kills = kills_bound_reference(k_rand, m_rand, survivors - closest) if m_rand else 0
    assert ev["drop_lower_bound"] == pytest.approx((k_close + kills) / n, abs=1e-15)
    estimate = Fraction(k_close * m_rand + k_rand * (survivors - closest), m_rand * n) if m_rand else \
        Fraction(k_close, n)
    assert ev["estimated_drop"] == pytest.approx(float(estimate), abs=1e-15)


@pytest.mark.parametrize("survivors, sampled", [(133, 16), (10, 8), (40, 16), (60, 32), (200, 32), (33, 32)])
def test_the_budget_bound_covers_the_true_drop_at_least_97_5_percent(survivors: int, sampled: int) -> None:
    """What the flag claims: for every true kill count ``R`` (a rate up to one half) among the survivors that the
    closest ``h = floor(0.75 m)`` leave, the verdict's bound stays at or under the true drop ``(k_c + R) / n`` with
    probability at least 0.975 over the random part's draw (hypergeometric, exact fractions). The Wilson bound
    used before covered 84.3% on the quickstart's ReLU run (133 survivors, 12 closest, 4 at random, ``R = 5``)
    and 11% where almost every survivor is drawn (1 kill among 9 others of which 8 are drawn)."""
    n, closest = 200, math.floor(0.75 * sampled)
    plan = _plan(sampled, survivors, closest)
    random_part, others = list(range(closest, sampled)), survivors - closest
    worst = Fraction(1)
    for kills in range(others // 2 + 1):
        covered = Fraction(0)
        for j in range(len(random_part) + 1):
            bound = judge(plan, [0] + random_part[:j], 1, n, 0, 3, Thresholds()).evidence["drop_lower_bound"]
            if bound <= (1 + kills) / n + 1e-12:  # one of the closest broken, a census: no sampling error
                covered += hypergeometric_pmf(j, others, kills, len(random_part))
        worst = min(worst, covered)
    assert worst >= 1 - ALPHA
