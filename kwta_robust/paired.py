"""Paired comparison of two models evaluated on the same samples (``compare``: kWTA vs its ReLU twin).

Both records hold, per sample, whether it was classified correctly (clean) and whether it survived every attack
(worst case, ``first_broken_by == -1``). On the same samples the two accuracies are paired, and their difference
is judged on the samples where the models disagree:

* ``only_reference`` / ``only_other``: samples robust under one model and not the other (the discordant pairs);
* the difference in points, ``100 · (only_reference - only_other) / n``, with its 95% interval for paired
  proportions (Newcombe 1998, "Improved confidence intervals for the difference between binomial proportions based
  on paired data", method 10: Wilson score intervals of each proportion combined with the pairs' correlation);
* McNemar's exact test (McNemar 1947; the exact binomial form): under "no difference" the discordant samples
  split like fair coin flips, two-sided ``p = min(1, 2 · P[Bin(b + c, 1/2) <= min(b, c)])``.

A difference between two robust accuracies measured with the same attacks is a difference between two upper
bounds: the test says whether the gap between the measured numbers is larger than the sample explains, not which
model is more robust under a stronger attack.
"""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal
from dataclasses import dataclass
from typing import Sequence

from kwta_robust.comparability import same_samples, settings_notes
from kwta_robust.numbers import p_value_text, percent_text, signed_percent_text
from kwta_robust.record_index import RecordIndex
from kwta_robust.report import Cell, Table, point_text, record_name
from kwta_robust.results import EvalRecord, wilson_interval

CLEAN = "clean"


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1 when there are none)."""
    m, k = only_a + only_b, min(only_a, only_b)
    if m == 0:
        return 1.0
    log_half = m * math.log(0.5)
    tail = sum(math.exp(math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) + log_half)
               for i in range(k + 1))
    return min(1.0, 2.0 * tail)


def _corrected_association(cross: int, n: int) -> float:
    """Newcombe's (1998) continuity correction of the cross-product difference ``ad - bc`` in the pairs'
    correlation: a positive one is lowered by ``n / 2`` (and at most to 0), a negative one kept. Without it the
    correlation is overstated and the interval too narrow (e.g. 21 pairs, 1 and 7 discordant, ``ad - bc = 5``:
    -50.2 to -3.6 points instead of the method's -50.7 to -2.6)."""
    return float(cross) if cross < 0 else max(cross - n / 2, 0.0)


def paired_difference_interval(both: int, only_a: int, only_b: int, neither: int) -> tuple[float, float]:
    """95% interval of ``p_a - p_b`` for paired proportions (Newcombe 1998, method 10, with its continuity
    correction of the correlation); ``p_a = (both + only_a) / n``, ``p_b = (both + only_b) / n``."""
    n = both + only_a + only_b + neither
    if n == 0:
        return (math.nan, math.nan)
    pa, pb = (both + only_a) / n, (both + only_b) / n
    la, ua = wilson_interval(both + only_a, n)
    lb, ub = wilson_interval(both + only_b, n)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = _corrected_association(both * neither - only_a * only_b, n) / math.sqrt(margins) if margins > 0 else 0.0
    below = math.sqrt(max((pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2, 0.0))
    above = math.sqrt(max((ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2, 0.0))
    return (max(pa - pb - below, -1.0), min(pa - pb + above, 1.0))


@dataclass(frozen=True)
class PairedComparison:
    """``reference`` vs ``other`` at one point (``norm`` ``None``: clean accuracy) over the same ``n`` samples."""

    reference: str
    other: str
    norm: str | None
    eps_text: str | None
    n: int
    both: int
    only_reference: int
    only_other: int
    neither: int

    @property
    def difference(self) -> float:
        return (self.only_reference - self.only_other) / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return paired_difference_interval(self.both, self.only_reference, self.only_other, self.neither)

    @property
    def p_value(self) -> float:
        return mcnemar_exact_p(self.only_reference, self.only_other)


def _count(reference: EvalRecord, other: EvalRecord, a: Sequence[bool], b: Sequence[bool], norm: str | None,
           eps_text: str | None) -> PairedComparison:
    pairs = Counter(zip(map(bool, a), map(bool, b)))  # one pass in C over the samples, not four in Python
    return PairedComparison(
        record_name(reference), record_name(other), norm, eps_text, sum(pairs.values()),
        pairs[True, True], pairs[True, False], pairs[False, True], pairs[False, False])


def paired_comparisons(records: Sequence[EvalRecord]) -> list[PairedComparison]:
    """The first record against each other one evaluated on the same samples: clean accuracy, then the worst case
    at every threat point both records have."""
    found = []
    reference, *others = paired_records(records)
    for other in others:
        index = RecordIndex(other)  # its worst cases looked up once each, not scanned per threat point
        found.append(_count(reference, other, [f == 1 for f in reference.clean_flags],
                            [f == 1 for f in other.clean_flags], None, None))
        for w in reference.worst_case:
            v = index.worst(w.norm, w.eps)
            if v is not None:
                found.append(_count(reference, other, [f == -1 for f in w.first_broken_by],
                                    [f == -1 for f in v.first_broken_by], w.norm, w.eps_text))
    return found


def paired_records(records: Sequence[EvalRecord]) -> list[EvalRecord]:
    """The records :func:`paired_comparisons` pairs: the first, and each other one evaluated on its samples."""
    return [records[0], *(other for other in records[1:] if same_samples(records[0], other))]


def _bound_text(v: float) -> str:
    """An interval bound in points: :func:`~kwta_robust.numbers.percent_text`, with ``0.0`` for a bound that rounds
    to zero from below (an interval around no difference read ``-0.0 to 0.0``)."""
    text = percent_text(v)
    return percent_text(0.0) if Decimal(text) == 0 else text


def paired_table(records: Sequence[EvalRecord]) -> Table | None:
    """The paired comparisons as a table (``None`` with fewer than two records on the same samples); an attack that
    ran with other effective settings in the paired records is a note (their worst cases are not the same
    measurement: :func:`kwta_robust.comparability.settings_notes`)."""
    rows = []
    for c in paired_comparisons(records):
        low, high = c.interval
        rows.append([
            Cell(f"{c.reference} − {c.other}"),
            Cell(CLEAN if c.norm is None else f"worst case {point_text(c.norm, c.eps_text)}"),
            Cell(c.n), Cell(signed_percent_text(c.difference)),
            Cell(f"{_bound_text(low)} to {_bound_text(high)}"), Cell(c.only_reference), Cell(c.only_other),
            Cell(p_value_text(c.p_value)),
        ])
    if not rows:
        return None
    differ = settings_notes([(r.label, r) for r in paired_records(records)])
    # "the same attacks" only where no note below says an attack's settings differ between the records
    attacks = ("measured with attacks whose settings differ between the models (below), so a gap may come from the "
               "attacks as much as from the models; even a significant gap" if differ else
               "measured with the same attacks: a significant gap")
    return Table(
        ["models", "accuracy", "n", "diff (points)", "95% interval", "only first", "only second", "McNemar p"], rows,
        ["Paired over the same samples: the first model's accuracy minus the second's, in points, with its 95% "
         "interval for paired proportions (Newcombe 1998); only first / only second: samples correct (for the worst "
         "case: robust) under that model alone, on which McNemar's exact test is taken. Both accuracies are upper "
         f"bounds {attacks} says the measured numbers differ, not which model resists a stronger attack (a model "
         "flagged critical has a number that is not evidence).", *differ],
        "Paired comparison",
        key_columns=2,  # the models and the accuracy compared name a row: a continuation block repeats both
    )
