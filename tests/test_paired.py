"""The paired comparison of two models on the same samples: McNemar's exact test against scipy's binomial test, the
Newcombe interval's coverage by simulation, and the table ``compare`` prints, counted from the records."""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import binomtest

from eval_helpers import make_record, make_result
from kwta_robust.formats import render_table
from kwta_robust.narrow import narrow_markdown
from kwta_robust.paired import mcnemar_exact_p, paired_comparisons, paired_difference_interval, paired_table


@pytest.mark.parametrize("only_a, only_b", [(10, 2), (0, 7), (3, 3), (40, 55), (0, 0), (1, 0)])
def test_mcnemar_is_the_exact_two_sided_binomial_test(only_a: int, only_b: int) -> None:
    expected = 1.0 if only_a + only_b == 0 else binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert mcnemar_exact_p(only_a, only_b) == pytest.approx(expected, rel=1e-9)
    assert mcnemar_exact_p(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)


def test_the_interval_brackets_the_estimate_and_mirrors_when_the_models_swap() -> None:
    for both, a, b, neither in [(30, 12, 3, 55), (0, 0, 0, 20), (5, 0, 9, 0), (100, 1, 1, 2)]:
        n = both + a + b + neither
        low, high = paired_difference_interval(both, a, b, neither)
        assert -1.0 <= low <= (a - b) / n <= high <= 1.0
        swapped = paired_difference_interval(both, b, a, neither)
        assert swapped == pytest.approx((-high, -low))


def test_the_interval_matches_the_published_method_with_its_continuity_correction() -> None:
    """Newcombe's method 10 lowers a positive ad - bc by n/2 in the correlation (Newcombe 1998; the square-and-add
    interval of Fagerland, Lydersen & Laake 2017, ch. 8, on Bentur et al. 2009's table [[1, 1], [7, 12]]: -0.507
    to -0.026); without the correction that table gave -0.502 to -0.036."""
    low, high = paired_difference_interval(1, 1, 7, 12)
    assert (round(low, 3), round(high, 3)) == (-0.507, -0.026)
    low, high = paired_difference_interval(14, 3, 4, 9)  # ad - bc = 114 > n/2 = 15
    assert (round(low, 3), round(high, 3)) == (-0.206, 0.143)


#: Newcombe (1998), "Improved confidence intervals for the difference between binomial proportions based on paired
#: data", Stat. Med. 17:2635-2650: the worked examples (a, b, c, d; theta = (b - c) / n) and method 10's printed
#: 95% limits, four decimals. Recomputed by hand from the paper's formulas (Wilson limits l, u of (a + b) / n and
#: (a + c) / n, z = 1.959964; phi = (ad - bc) / sqrt((a+b)(c+d)(a+c)(b+d)), a positive ad - bc lowered by n / 2 but
#: not below 0, phi = 0 when a margin is 0): every row but one agrees to the fourth decimal; for (1, 97, 1, 1) the
#: lower limit is 0.873672, printed 0.8736.
NEWCOMBE_TABLE = [
    ((36, 12, 2, 0), (0.0569, 0.3404)), ((20, 12, 2, 16), (0.0562, 0.3292)), ((18, 12, 2, 18), (0.0562, 0.3290)),
    ((36, 14, 0, 0), (0.1528, 0.4167)), ((35, 14, 0, 1), (0.1461, 0.4175)), ((18, 14, 0, 18), (0.1441, 0.3963)),
    ((2, 97, 1, 0), (0.8721, 0.9854)), ((1, 97, 1, 1), (0.8737, 0.9850)), ((0, 29, 1, 0), (0.6666, 0.9882)),
    ((2, 98, 0, 0), (0.9178, 0.9945)), ((1, 98, 0, 1), (0.9171, 0.9916)), ((0, 30, 0, 0), (0.8395, 1.0)),
    ((54, 0, 0, 0), (-0.0664, 0.0664)), ((53, 0, 0, 1), (-0.0729, 0.0729)), ((30, 0, 0, 24), (-0.0358, 0.0358)),
    ((29, 0, 0, 25), (-0.0354, 0.0354)), ((28, 0, 0, 26), (-0.0352, 0.0352)), ((27, 0, 0, 27), (-0.0351, 0.0351)),
]


@pytest.mark.parametrize("counts, limits", NEWCOMBE_TABLE)
def test_the_interval_reproduces_newcombes_worked_examples(counts: tuple[int, int, int, int],
                                                            limits: tuple[float, float]) -> None:
    """Method 10 on the paper's own examples: rows with ad - bc > n/2 (20, 12, 2, 16; 35, 14, 0, 1; 53, 0, 0, 1;
    ...) pin the continuity correction of phi (without it (20, 12, 2, 16) gives 0.0618 to 0.3242, (30, 0, 0, 24)
    -0.0074 to 0.0074), rows with a zero margin pin phi = 0."""
    low, high = paired_difference_interval(*counts)
    assert (round(low, 4), round(high, 4)) == limits


def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time() -> None:
    """Newcombe's method 10 has close to nominal coverage: simulated paired samples of 60 with correlated outcomes."""
    rng = random.Random(0)
    for p_both, p_a, p_b in [(0.4, 0.15, 0.05), (0.1, 0.05, 0.05), (0.6, 0.02, 0.2)]:
        truth, hits, runs = p_a - p_b, 0, 1500
        for _ in range(runs):
            counts = [0, 0, 0, 0]
            for _ in range(60):
                u = rng.random()
                counts[0 if u < p_both else 1 if u < p_both + p_a else 2 if u < p_both + p_a + p_b else 3] += 1
            low, high = paired_difference_interval(*counts)
            hits += low <= truth <= high
        assert 0.92 <= hits / runs <= 0.99, (p_both, p_a, p_b, hits / runs)


def kwta_relu_pair() -> tuple:
    """relu keeps samples 0-4 robust, kwta sample 1 only (bpda broke sample 0); relu misclassifies sample 9."""
    kwta = make_record([make_result("pgd", [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
                        make_result("bpda", [0, 1, -1, -1, -1, -1, -1, -1, -1, -1], kind="bpda", position=1,
                                    cumulative=True)], label="kwta")
    relu = make_record([make_result("pgd", [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])], label="relu",
                       clean_flags=[1] * 9 + [0])
    return kwta, relu


def test_the_comparisons_are_counted_from_the_records() -> None:
    kwta, relu = kwta_relu_pair()
    clean, worst = paired_comparisons([kwta, relu])
    assert (clean.norm, clean.n, clean.both, clean.only_reference, clean.only_other, clean.neither) == \
        (None, 10, 9, 1, 0, 0)
    # worst case: kwta keeps sample 1 only (bpda broke 0); relu keeps samples 0-4
    assert (worst.norm, worst.both, worst.only_reference, worst.only_other, worst.neither) == ("linf", 1, 0, 4, 5)
    assert worst.difference == pytest.approx(-0.4) and worst.p_value == pytest.approx(0.125)
    other = make_record([make_result("pgd", [1] * 10)], label="elsewhere")
    other.dataset["indices"] = list(range(10, 20))
    assert paired_comparisons([kwta, other]) == []  # other samples: no pairing
    assert paired_table([kwta, other]) is None


def test_compare_prints_the_paired_table() -> None:
    kwta, relu = kwta_relu_pair()
    text = render_table(paired_table([kwta, relu]), "wide")
    # McNemar on 0 vs 4 discordant samples: p = 2 / 2**4 = 0.125, a tie at two decimals, rounded up as every number
    # the tables print (Python's f"{0.125:.2f}" writes 0.12)
    assert "| kwta − relu | worst case Linf 0.3 |" in text and "-40.0" in text and "| 0.13 " in text
    assert "| 0.12 " not in text
    assert "Newcombe 1998" in text and "McNemar" in text
    both, alone = narrow_markdown([kwta, relu]), narrow_markdown([kwta])
    assert "| kwta − relu" in both and "Paired over the same samples" in both
    assert "kwta − " not in alone and "Paired over" not in alone
    assert not math.isnan(paired_comparisons([kwta, relu])[0].interval[0])


def test_the_html_report_has_a_paired_section(tmp_path) -> None:
    from kwta_robust.html_report import write_report

    kwta, relu = kwta_relu_pair()
    both = write_report(tmp_path / "both.html", [kwta, relu]).read_text(encoding="utf-8")
    assert 'id="paired"' in both and "kwta − relu" in both and "Newcombe 1998" in both
    alone = write_report(tmp_path / "alone.html", [kwta]).read_text(encoding="utf-8")
    assert 'id="paired"' not in alone


def test_counts_are_the_four_cells_of_the_pairs() -> None:
    """One pass over the samples (a Counter of pairs) gives what the four sums over them gave."""
    rng = random.Random(3)
    clean = [rng.choice([0, 1, 1]) for _ in range(500)]
    records = []
    for _ in range(3):
        flags = [rng.choice([0, 1]) if c else -1 for c in clean]
        records.append(make_record([make_result("pgd", flags)], clean_flags=[rng.choice([0, 1]) for _ in clean]))
    for other in records[1:]:
        found = paired_comparisons([records[0], other])
        assert len(found) == 2
        for c, (a, b) in zip(found,
                             [([f == 1 for f in records[0].clean_flags], [f == 1 for f in other.clean_flags]),
                              ([f == -1 for f in records[0].worst_case[0].first_broken_by],
                               [f == -1 for f in other.worst_case[0].first_broken_by])]):
            pairs = list(zip(a, b))
            assert (c.n, c.both, c.only_reference, c.only_other, c.neither) == (
                len(pairs), sum(1 for x, y in pairs if x and y), sum(1 for x, y in pairs if x and not y),
                sum(1 for x, y in pairs if y and not x), sum(1 for x, y in pairs if not x and not y))


def test_an_interval_around_no_difference_on_a_test_set_reads_without_a_negative_zero() -> None:
    """10,000 samples (a full CIFAR-10 test set) that neither model keeps at Linf 0.3: the interval is ± 0.04 points
    and read ``-0.0 to 0.0`` (its lower bound rounded to zero from below); the difference column already wrote 0.0.
    Rounded outward since session 50 (never narrower than computed): ``-0.1 to 0.1``."""
    n = 10_000
    kwta, relu = (make_record([make_result("pgd", [0] * n)], label=label) for label in ("kwta", "relu"))
    worst = paired_comparisons([kwta, relu])[1]
    assert worst.interval[0] < 0 < worst.interval[1] and abs(worst.interval[0]) < 0.0005
    text = render_table(paired_table([kwta, relu]), "wide")
    assert "| kwta − relu | worst case Linf 0.3 | 10000 | 0.0 | -0.1 to 0.1 |" in text and "-0.0" not in text
