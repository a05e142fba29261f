"""README-truth audit of the statistics the harness records and prints, each against an independent computation:
scipy's Wilson interval, exact binomial test and hypergeometric distribution, Newcombe's (1998) method 10 written out
by hand, hand sums over the per-sample lists of the quickstart records (``tests/fixtures/quickstart``)."""

from __future__ import annotations

import math
import random
import re
import statistics
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

import pytest
import torch
from scipy.stats import binomtest, hypergeom, t
from torch import nn

from attacks.noise import NoiseProbeResult
from attacks.verdicts import classify
from eval_helpers import make_record, make_result
from html_helpers import quickstart_records
from kwta_robust.formats import render_stdout
from kwta_robust.budget_check import PlannedRerun, judge
from kwta_robust.diagnostics import Thresholds
from kwta_robust.narrow import narrow_markdown
from kwta_robust.paired import mcnemar_exact_p, paired_comparisons, paired_difference_interval, paired_table
from kwta_robust.report import budget_check_notes, cell_text, expected_cell
from kwta_robust.results import Accuracy, wilson_interval


def scipy_wilson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return ci.low, ci.high


def half_up(value: float, places: str = "0.1") -> str:
    """``value`` rounded half away from zero, as papers round (the README's rule for every printed number)."""
    return str(Decimal(f"{float(value):.12g}").quantize(Decimal(places), rounding=ROUND_HALF_UP))


def outward(value: float, up: bool, places: str = "0.1") -> str:
    """An interval's bound rounded outward (the lower down, the upper up), as every printed interval is; ``0.0``
    for a bound that rounds to zero."""
    text = str(Decimal(f"{float(value):.12g}").quantize(Decimal(places), rounding=ROUND_CEILING if up else ROUND_FLOOR))
    return text.lstrip("-") if Decimal(text) == 0 else text


def test_the_wilson_interval_is_scipys_at_every_count_and_at_the_edges() -> None:
    for n in [*range(1, 41), 200, 10_000, 123_457]:
        for k in (range(n + 1) if n <= 40 else (0, 1, n // 3, n - 1, n)):
            low, high = wilson_interval(k, n)
            ref_low, ref_high = scipy_wilson(k, n)
            assert low == pytest.approx(ref_low, abs=1e-12) and high == pytest.approx(ref_high, abs=1e-12), (k, n)
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_every_accuracy_of_the_quickstart_records_is_the_wilson_interval_of_its_per_sample_flags() -> None:
    """README: for every attack and epsilon the robust accuracy with its 95% Wilson interval; recounted here from
    the per-sample flags (1 survived) and ``first_broken_by`` (-1 never broken)."""
    for rec in quickstart_records():
        assert (rec.ci_method, rec.ci_level) == ("wilson", 0.95)
        counted = [(rec.clean, sum(f == 1 for f in rec.clean_flags))]
        counted += [(r.robust, sum(f == 1 for f in r.flags)) for r in rec.results]
        counted += [(w.robust, sum(f == -1 for f in w.first_broken_by)) for w in rec.worst_case]
        for acc, k in counted:
            n = len(rec.clean_flags)
            assert (acc.correct, acc.n, acc.accuracy) == (k, n, k / n)
            assert (acc.ci_low, acc.ci_high) == pytest.approx(scipy_wilson(k, n), abs=1e-12)
            # the committed records are static: the code that writes an accuracy must give the same from the count
            fresh = Accuracy.of(k, n)
            assert (fresh.correct, fresh.n, fresh.accuracy) == (k, n, k / n)
            assert (fresh.ci_low, fresh.ci_high) == pytest.approx(scipy_wilson(k, n), abs=1e-12)


def test_the_noise_score_sums_the_correct_classifications_over_the_levels_per_draw() -> None:
    """Ahmad & Scheinkman's score: correct classifications summed over the noise levels, averaged over the draws;
    normalized by levels x images; its level 0 is the clean accuracy; the tables print both."""
    records = quickstart_records()
    text = narrow_markdown(records)
    for rec in records:
        (probe,) = [p for p in rec.noise if p.kind == "numenta"]
        res = probe.result
        total = sum(map(sum, res["correct_counts"]))
        assert res["noise_score"] == total / res["draws"] == rec.noise_score()
        assert res["noise_score_normalized"] == pytest.approx(total / res["draws"] / (11 * len(rec.clean_flags)))
        assert res["levels"] == pytest.approx([0.05 * i for i in range(11)])
        assert res["accuracy"][0] == rec.clean.accuracy
        assert f"{rec.label} {half_up(100 * res['noise_score_normalized'])}%" in " ".join(text.split())  # wrapped
        assert re.search(rf"\| {rec.label} .*\| +{total // res['draws']} \(\d+–\d+\) \|", text)  # with its interval
        # the records are static: the probe's own result (attacks.noise) must give these scores from the counts, with
        # one draw as stored and with two draws of the same counts (each sample right twice: the same score)
        counts = torch.tensor(res["correct_counts"])
        for draws in (1, 2):
            fresh = NoiseProbeResult("numenta", tuple(res["levels"]), draws, 0, {}, len(rec.clean_flags),
                                     tuple(res["accuracy"]), (), counts * draws).to_dict()
            assert fresh["noise_score"] == total
            assert fresh["noise_score_normalized"] == pytest.approx(total / (11 * len(rec.clean_flags)))


@pytest.mark.parametrize("only_a, only_b", [(0, 1), (1, 0), (0, 40), (40, 0), (7, 7), (3, 19), (120, 124),
                                            (1000, 1100), (0, 124)])
def test_mcnemar_is_scipys_exact_two_sided_binomial_test(only_a: int, only_b: int) -> None:
    expected = binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact_p(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert mcnemar_exact_p(0, 0) == 1.0


def newcombe_10(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """Newcombe (1998) method 10 as the paper writes it: Wilson limits of (a + b) / n and (a + c) / n combined with
    phi, a positive ad - bc lowered by n / 2 (not below 0), a negative one kept, phi = 0 on a zero margin."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = scipy_wilson(a + b, n)
    l2, u2 = scipy_wilson(a + c, n)
    cross = a * d - b * c
    corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = corrected / math.sqrt(margins) if margins else 0.0
    delta = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    eps = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return max(p1 - p2 - delta, -1.0), min(p1 - p2 + eps, 1.0)


def test_the_paired_interval_is_newcombes_method_10_on_random_tables_and_edges() -> None:
    rng = random.Random(42)
    tables = [tuple(rng.randint(0, 15) for _ in range(4)) for _ in range(400)]
    tables += [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 30, 0, 0), (0, 0, 30, 0), (8, 0, 124, 68),
               (0, 0, 0, 200), (185, 3, 8, 4), (5000, 40, 60, 4900)]
    for counts in tables:
        if sum(counts):
            assert paired_difference_interval(*counts) == pytest.approx(newcombe_10(*counts), abs=1e-12), counts
    assert all(math.isnan(v) for v in paired_difference_interval(0, 0, 0, 0))


def test_the_quickstart_paired_rows_are_recomputed_from_the_per_sample_lists() -> None:
    """The first model minus the second over the same samples: counts from the flags, the difference in points,
    Newcombe's interval and McNemar's p as the table prints them (halves up)."""
    kwta, relu = quickstart_records()
    rows = {line.split(" | ")[1]: line for line in render_stdout([kwta, relu], "wide").splitlines()
            if line.startswith("| kwta − relu |")}
    points = [(None, [f == 1 for f in kwta.clean_flags], [f == 1 for f in relu.clean_flags])]
    points += [(w, [f == -1 for f in w.first_broken_by], [f == -1 for f in relu.worst(w.norm, w.eps).first_broken_by])
               for w in kwta.worst_case]
    assert len(rows) == len(points) + 1 == 4  # and the row of their one noise probe (numenta), recomputed below
    for w, ref, other in points:
        n = len(ref)
        a = sum(x and y for x, y in zip(ref, other))
        b = sum(x and not y for x, y in zip(ref, other))
        c = sum(y and not x for x, y in zip(ref, other))
        low, high = newcombe_10(a, b, c, n - a - b - c)
        p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        p_text = "< 1e-6" if p < 1e-6 else half_up(p, "0.01") if p >= 0.01 else f"{p:.2g}"
        diff = half_up(100 * (b - c) / n)
        key = "clean" if w is None else f"worst case Linf {w.eps_text}"
        assert rows[key] == (f"| kwta − relu | {key} | {n} | {'+' if b > c and diff != '0.0' else ''}{diff} | "
                       f"{outward(100 * low, False)} to {outward(100 * high, True)} | {b} | {c} | {p_text} |")
    [mine], [theirs] = kwta.noise, relu.noise  # one draw: a sample's score is its count summed over the levels
    ref, other = (list(map(sum, zip(*probe.result["correct_counts"]))) for probe in (mine, theirs))
    d = [x - y for x, y in zip(ref, other)]
    n, mean = len(d), statistics.fmean(d)
    half = t.ppf(0.975, n - 1) * statistics.stdev(d) / math.sqrt(n)
    higher, lower = sum(v > 0 for v in d), sum(v < 0 for v in d)
    p = binomtest(lower, higher + lower, 0.5).pvalue
    assert p < 1e-6 and (sum(ref), sum(other)) == (mine.result["noise_score"], theirs.result["noise_score"])
    key = f"noise numenta {sum(ref)} vs {sum(other)}"
    assert rows[key] == (f"| kwta − relu | {key} | {n} | {mean:+.2f}/sample | {mean - half:.2f} to "
                         f"{mean + half:.2f} | {higher} | {lower} | sign < 1e-6 |")


def test_the_pairing_takes_only_the_records_on_the_first_ones_samples() -> None:
    first = make_record([make_result("pgd", [1, 1, 0, 0, 1, 0])], label="first")
    elsewhere = make_record([make_result("pgd", [1, 1, 1, 1, 1, 1])], label="elsewhere")
    elsewhere.dataset["indices"] = [6, 7, 8, 9, 10, 11]
    same = make_record([make_result("pgd", [0, 1, 1, 0, 0, 0])], label="same")
    found = paired_comparisons([first, elsewhere, same])
    assert {c.other for c in found} == {"same"}
    worst = [c for c in found if c.norm == "linf"][0]
    assert (worst.both, worst.only_reference, worst.only_other, worst.neither) == (1, 2, 1, 2)
    assert paired_table([first, elsewhere]) is None


@pytest.mark.parametrize("fmt, paired", [("md", True), ("wide", True), ("latex", True), ("csv", False),
                                         ("json", False)])
def test_table_of_several_records_prints_the_paired_comparison_in_md_wide_and_latex_only(fmt: str,
                                                                                       paired: bool) -> None:
    # the paired table (its note); csv and json give its numbers as columns of their one table instead
    assert ("Paired over the same samples" in render_stdout(quickstart_records(), fmt)) is paired


def _plan(survivors: int, sampled: int, closest: int) -> PlannedRerun:
    r = make_result("pgd", [1] * 100, eps=0.1, params={"steps": 10})
    return PlannedRerun(r, {"steps": 30}, survivors, list(range(sampled)), 100.0, list(range(closest)))


def scipy_kills_bound(k: int, m: int, population: int) -> int:
    """The exact one-sided 97.5% lower bound of the kills among ``population`` from ``k`` of ``m`` drawn without
    replacement: the smallest ``R`` with ``P(X >= k | R) > 0.025``, ``X`` scipy's hypergeometric."""
    return next(r for r in range(population + 1) if hypergeom.sf(k - 1, population, r, m) > 0.025 + 1e-12)


@pytest.mark.parametrize("survivors, sampled, closest", [(50, 20, 15), (50, 8, 6), (8, 8, 6), (133, 16, 12),
                                                         (30, 10, 0)])
def test_the_budget_checks_estimate_and_bound_are_the_stratified_formula_with_scipys_hypergeometric(
        survivors: int, sampled: int, closest: int) -> None:
    """Estimate ``(k_c + k_r / (m − h) · (S − h)) / n``; bound ``(k_c + R_L) / n``, ``R_L`` the exact one-sided
    97.5% lower bound of the kills among the ``S − h`` survivors the ``m − h`` random ones were drawn from
    (hypergeometric); flagged when the bound reaches ladder_margin on >= min_count kills."""
    n, thr = 100, Thresholds()
    for k_close in range(0, closest + 1, max(1, closest // 3)):
        for k_rand in range(0, sampled - closest + 1):
            broken = list(range(k_close)) + list(range(closest, closest + k_rand))
            ev = judge(_plan(survivors, sampled, closest), broken, 1, n, 0, 3, thr).evidence
            m_rand = sampled - closest
            kills = scipy_kills_bound(k_rand, m_rand, survivors - closest) if m_rand else 0
            estimate = (k_close + (k_rand / m_rand * (survivors - closest) if m_rand else 0)) / n
            bound = (k_close + kills) / n
            assert ev["estimated_drop"] == pytest.approx(estimate, abs=1e-12)
            assert ev["drop_lower_bound"] == pytest.approx(bound, abs=1e-12)
            assert ev["flagged"] == bool(k_close + k_rand >= 2 and bound >= 0.02 - 1e-12)


def test_the_budget_note_gives_the_wilson_interval_of_the_verified_robust_count() -> None:
    notes = [n for n in budget_check_notes(quickstart_records()) if "lowest robust accuracy" in n]
    assert notes
    by_label = {r.label: r for r in quickstart_records()}
    for note in notes:
        label, broke = re.match(r"\[(\w+)\] .* broke (\d+) samples? the suite", note).groups()
        worst = by_label[label].worst_case[0]
        k, n = worst.robust.correct - int(broke), worst.robust.n
        low, high = scipy_wilson(k, n)
        down, up = math.floor(1000 * low) / 10, math.ceil(1000 * high) / 10  # rounded outward (outward50)
        assert (f"verified is {half_up(100 * k / n)}% ({down:.1f}–{up:.1f}); the worst case "
                f"keeps the suite's {half_up(100 * worst.robust.correct / n)}%") in note


class Scripted(nn.Module):
    """Logits from a script, one ``[N, K]`` tensor per forward pass (one draw of a randomized model)."""

    def __init__(self, draws: list[list[int]], classes: int) -> None:
        super().__init__()
        self.draws, self.classes, self.calls = draws, classes, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = torch.tensor(self.draws[self.calls])
        self.calls += 1
        return torch.nn.functional.one_hot(pred, self.classes).float() + 0 * x.sum(1, keepdim=True)


def test_a_plurality_verdict_counts_ties_against_the_true_class_and_stores_the_error_rate() -> None:
    # per sample, the four draws' predictions: a 2-2 tie with the true class, 3-1 for it, a 2-2 tie of two wrong
    # classes, 2-1-1 for the true class
    y = torch.tensor([0, 0, 1, 2])
    draws = [[0, 0, 0, 2], [1, 0, 0, 2], [0, 0, 2, 0], [1, 1, 2, 1]]
    verdict = classify(Scripted(draws, 3), torch.zeros(4, 1), y, draws=4)
    assert (verdict.pred == y).tolist() == [False, True, False, True]
    assert verdict.error_rate.tolist() == [0.5, 0.25, 1.0, 0.5]


def test_the_expected_accuracy_interval_is_the_mean_plus_minus_1_96_standard_errors() -> None:
    clean = [0.0, 0.2, 0.4, 0.1, 0.3]
    units = [[0.5, None, 0.1, 0.6, None], [None, 0.1, 0.9, 0.0, 0.2]]
    right = [0.5, 0.8, 0.1, 0.4, 0.7]  # 1 − each sample's largest error rate, the clean input included
    mean, se = statistics.fmean(right), statistics.stdev(right) / math.sqrt(len(right))
    cell = expected_cell(clean, units)
    assert cell.value == pytest.approx(mean)
    z = statistics.NormalDist().inv_cdf(0.975)  # the README's 1.96, as every other 95 % interval takes it
    assert cell.ci == pytest.approx((mean - z * se, mean + z * se), rel=1e-12)


def test_one_sample_has_no_standard_error_so_the_expected_accuracy_gets_no_interval() -> None:
    """A standard error over the samples needs two of them: one sample printed a zero-width "95% interval"
    (``50.0 (50.0–50.0)``)."""
    cell = expected_cell([0.2], [[0.5]])
    assert cell.value == pytest.approx(0.5) and cell.ci is None
    assert cell_text(cell) == "50.0"
