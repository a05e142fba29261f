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

A noise probe both records ran with the same settings (kind, levels, draws, params such as numenta's ``value``, and
seed: so the same noisy inputs, :mod:`attacks.noise`) is paired too (:class:`NoisePairedComparison`): each sample's
score is its ``correct_counts [levels][n]`` summed over the levels and divided by the draws (its share of Ahmad &
Scheinkman's 2019 noise score, 0 to ``len(levels)``; the scores of the ``n`` samples sum to the record's
``noise_score``). The row holds both noise scores, the mean per-sample difference with a paired t interval (Student
1908: ``mean ± t_{0.975, n-1} · sd / sqrt(n)``; no resampling makes the interval depend on a seed), the samples
scoring higher under each model, and the exact two-sided sign test on them (:func:`mcnemar_exact_p`: the same
binomial test, ties left out). The differences are bounded but may be skewed or lumpy (many exactly 0), so the t
interval is the central limit theorem's: it follows the one rule of every t interval of noise results, given from
30 samples on (:func:`kwta_robust.noise_ci.mean_interval`; it was given at any n, while the noise score's waited for
30), ``—`` below; the sign test is exact at any n. A row names its probe as every table does
(:func:`kwta_robust.noise_notes.probe_name`: ``noise numenta``, ``noise numenta [2]``). Probes of one kind with other
settings drew other noise: they get no row but a note (:func:`noise_pairs`).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from decimal import Decimal
from dataclasses import dataclass
from typing import Any, Sequence

from kwta_robust.comparability import same_samples, settings_notes
from kwta_robust.noise_ci import T_RULE, mean_interval, sample_scores
from kwta_robust.noise_notes import probe_names
from kwta_robust.numbers import (bound_number_text, interval_percent_texts, number_text, p_value_text, percent_text,
                                 setting_value_text, signed_number_text, signed_percent_text)
from kwta_robust.record_index import RecordIndex
from kwta_robust.report import Cell, Table, point_text, record_name, threat_points
from kwta_robust.results import EvalRecord, NoiseResult, wilson_interval

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


def paired_comparisons(records: Sequence[EvalRecord],
                       shown_with: Sequence[EvalRecord] = ()) -> list[PairedComparison]:
    """The first record against each other one evaluated on the same samples: clean accuracy, then the worst case
    at every threat point both records have, its epsilon written as the tables of ``shown_with`` (default:
    ``records``) write it (0.3 and 0.1 + 0.2 in full: :func:`~kwta_robust.report.threat_points`; two rows
    ``worst case Linf 0.3`` before, and a table of three records named one point two ways, pair by pair)."""
    return [c for _, found in paired_by_record(records, shown_with) for c in found]


def paired_by_record(records: Sequence[EvalRecord],
                     shown_with: Sequence[EvalRecord] = ()) -> list[tuple[EvalRecord, list[PairedComparison]]]:
    """:func:`paired_comparisons`, per record paired with the first (:func:`paired_records`, in their order): each
    with its comparisons against the first (a record's own row of the CSV/JSON paired columns,
    :mod:`kwta_robust.paired_columns`)."""
    texts = {(norm, eps): text for norm, eps, text in threat_points(shown_with or records)}
    reference, *others = paired_records(records)
    return [(other, _pair(reference, other, texts)) for other in others]


def _pair(reference: EvalRecord, other: EvalRecord, texts: dict[tuple[str, float], str]) -> list[PairedComparison]:
    """:func:`paired_comparisons` of ``reference`` and ``other`` (evaluated on the same samples), each threat point
    written as ``texts`` says (its caller names them once, not once per pair)."""
    index = RecordIndex(other)  # its worst cases looked up once each, not scanned per threat point
    found = [_count(reference, other, [f == 1 for f in reference.clean_flags], [f == 1 for f in other.clean_flags],
                    None, None)]
    for w in reference.worst_case:
        v = index.worst(w.norm, w.eps)
        if v is not None:
            found.append(_count(reference, other, [f == -1 for f in w.first_broken_by],
                                [f == -1 for f in v.first_broken_by], w.norm, texts[(w.norm, w.eps)]))
    return found


def paired_records(records: Sequence[EvalRecord]) -> list[EvalRecord]:
    """The records :func:`paired_comparisons` pairs: the first, and each other one evaluated on its samples."""
    return [records[0], *(other for other in records[1:] if same_samples(records[0], other))]


@dataclass(frozen=True)
class NoisePairedComparison:
    """``reference`` vs ``other`` on one noise probe both ran with the same settings on the same samples (``name``:
    the reference's name of it, :func:`~kwta_robust.noise_notes.probe_names`: ``noise numenta``, or ``noise numenta
    [2]`` where the reference holds several probes of that kind). Per sample its score under each model, ``[n]``:
    correct answers summed over the probe's levels, averaged over its draws (0 to ``len(levels)``); they sum to the
    record's noise score (Ahmad & Scheinkman 2019)."""

    reference: str
    other: str
    name: str
    reference_scores: tuple[float, ...]
    other_scores: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.reference_scores)

    @property
    def reference_score(self) -> float:
        return math.fsum(self.reference_scores)

    @property
    def other_score(self) -> float:
        return math.fsum(self.other_scores)

    @functools.cached_property
    def differences(self) -> tuple[float, ...]:
        """Per sample, ``[n]``: its score under the reference minus under the other model (computed on the first
        access, kept for :attr:`difference`, :attr:`interval`, :attr:`higher`, :attr:`lower`; a tuple, as the
        scores)."""
        return tuple(a - b for a, b in zip(self.reference_scores, self.other_scores))

    @property
    def difference(self) -> float:
        """The mean per-sample difference (the noise scores' difference over ``n``)."""
        return math.fsum(self.differences) / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        """The paired t 95% interval of :attr:`difference`, ``(nan, nan)`` below 30 samples (the one rule of every t
        interval of noise results, :func:`~kwta_robust.noise_ci.mean_interval`)."""
        return mean_interval(self.differences) or (math.nan, math.nan)

    @property
    def higher(self) -> int:
        """Samples scoring higher under the reference."""
        return sum(d > 0 for d in self.differences)

    @property
    def lower(self) -> int:
        """Samples scoring higher under the other model."""
        return sum(d < 0 for d in self.differences)

    @property
    def p_value(self) -> float:
        """The exact two-sided sign test on :attr:`higher` and :attr:`lower` (ties left out)."""
        return mcnemar_exact_p(self.higher, self.lower)


def noise_settings(probe: NoiseResult) -> dict[str, Any]:
    """What makes two noise probes the same draws: levels, draws, the probe's params (``value``) and seed."""
    return {"levels": [float(v) for v in probe.levels], "draws": probe.draws, **(probe.result.get("params") or {}),
            "seed": probe.seed}


def noise_pairs(reference: EvalRecord, other: EvalRecord) -> tuple[list[NoisePairedComparison], list[str]]:
    """The noise probes of ``reference`` that ``other`` ran with the same settings (:func:`noise_settings`), paired
    on their samples, in the reference's order; and a note for each of its probes that ``other`` ran with other
    settings (the first that differs): other noise, so no paired row."""
    n, ref, oth = len(reference.clean_flags), record_name(reference), record_name(other)
    found, notes, taken, unmatched = [], [], set(), []
    for probe, name in zip(reference.noise, probe_names(reference.noise)):
        settings = noise_settings(probe)
        j = next((j for j, q in enumerate(other.noise)
                  if j not in taken and q.kind == probe.kind and noise_settings(q) == settings), None)
        if j is None:
            unmatched.append((name, probe))
            continue
        taken.add(j)
        a, b = sample_scores(probe, n), sample_scores(other.noise[j], n)
        if a is None or b is None:
            notes.append(f"{name}: no paired row, {oth if a is not None else ref} holds no per-sample counts of it "
                         "(correct_counts [levels][n]): evaluate it again with this version")
        else:
            found.append(NoisePairedComparison(ref, oth, name, tuple(a), tuple(b)))
    for name, probe in unmatched:
        j = next((j for j, q in enumerate(other.noise) if j not in taken and q.kind == probe.kind), None)
        if j is None:
            continue
        taken.add(j)
        mine, theirs = noise_settings(probe), noise_settings(other.noise[j])
        key = next(k for k in [*mine, *theirs] if mine.get(k) != theirs.get(k))
        notes.append(f"{name}: no paired row, its settings differ between the records ({key} "
                     f"{setting_value_text(mine.get(key))} in {ref}, {setting_value_text(theirs.get(key))} in {oth}): "
                     "the models saw other noisy inputs, so their scores are not paired")
    return found, notes


#: The legend of the noise rows of :func:`paired_table`.
NOISE_LEGEND = (
    "noise rows: the accuracy column names the noise probe (noise numenta; noise numenta [2], the second of its kind, "
    "where a record ran several), then the first model's noise score vs the second's; per sample, its score is its "
    "correct answers summed over the probe's levels and averaged over its draws (0 to the number of levels; the scores "
    "sum to the noise score, Ahmad & Scheinkman 2019), on the same noisy inputs for both models (one seed); diff: the "
    "mean per-sample difference (first minus second, in correct answers per sample, not points: its cell ends in "
    f"/sample) with its paired t 95% interval ({T_RULE}; else —); only first / only second: the samples scoring "
    "higher under that model (ties left out), on which the p column is the exact two-sided sign test (McNemar's "
    "binomial test, exact at any n; its cell starts with sign).")

#: What ends a noise row's diff cell (the column's header says points, which the accuracy rows hold) and starts its
#: p cell (the header says McNemar, the test of the accuracy rows): the row names its own units (:data:`NOISE_LEGEND`).
PER_SAMPLE, SIGN_TEST = "/sample", "sign "


def _noise_row(c: NoisePairedComparison) -> list[Cell]:
    low, high = c.interval
    interval = "—" if math.isnan(low) else f"{bound_number_text(low, False)} to {bound_number_text(high, True)}"
    return [Cell(f"{c.reference} − {c.other}"),
            Cell(f"{c.name} {number_text(c.reference_score)} vs {number_text(c.other_score)}"), Cell(c.n),
            Cell(signed_number_text(c.difference) + PER_SAMPLE), Cell(interval), Cell(c.higher), Cell(c.lower),
            Cell(SIGN_TEST + p_value_text(c.p_value))]


def _interval_text(low: float, high: float) -> str:
    """An interval of a difference in points, ``-6.5 to 1.1``: rounded outward as every interval the package prints
    (:func:`~kwta_robust.numbers.interval_percent_texts`), with ``0.0`` for a bound that rounds to zero (an interval
    around no difference read ``-0.0 to 0.0``)."""
    return " to ".join(percent_text(0.0) if Decimal(t) == 0 else t for t in interval_percent_texts(low, high))


def paired_table(records: Sequence[EvalRecord]) -> Table | None:
    """The paired comparisons as a table (``None`` with fewer than two records on the same samples); an attack that
    ran with other effective settings in the paired records is a note (their worst cases are not the same
    measurement: :func:`kwta_robust.comparability.settings_notes`). After each model's accuracies, a row per noise
    probe both ran with the same settings (:func:`noise_pairs`; :data:`NOISE_LEGEND`), a note per probe of one kind
    run with other settings."""
    rows, noise_notes, legend, disagree = [], [], [], []
    reference, *others = paired_records(records)
    texts = {(norm, eps): text for norm, eps, text in threat_points(records)}  # as the wide table names them; once
    for other in others:
        for c in _pair(reference, other, texts):
            rows.append([
                Cell(f"{c.reference} − {c.other}"),
                Cell(CLEAN if c.norm is None else f"worst case {point_text(c.norm, c.eps_text)}"),
                Cell(c.n), Cell(signed_percent_text(c.difference)),
                Cell(_interval_text(*c.interval)), Cell(c.only_reference), Cell(c.only_other),
                Cell(p_value_text(c.p_value)),
            ])
            disagree += tests_disagree(rows[-1][0].value, rows[-1][1].value, c.interval, c.p_value, c.only_reference,
                                       c.only_other)
        found, notes = noise_pairs(reference, other)
        rows += [_noise_row(c) for c in found]
        noise_notes += notes
        legend = [NOISE_LEGEND] if found else legend
    if not rows:
        return None
    differ = settings_notes([(r.label, r) for r in (reference, *others)])  # paired_records(records), found above
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
         "flagged critical has a number that is not evidence).", *disagree, *legend, *noise_notes, *differ],
        "Paired comparison",
        key_columns=2,  # the models and the accuracy compared name a row: a continuation block repeats both
    )


#: The level at which a paired row's interval and its test are read against each other (:func:`tests_disagree`).
ALPHA = 0.05


def tests_disagree(models: Any, accuracy: Any, interval: tuple[float, float], p_value: float, only_first: int,
                   only_second: int) -> list[str]:
    """A note where a paired row's 95% interval (Newcombe 1998) and McNemar's exact test disagree at the 5% level:
    the interval excludes 0 while p >= 0.05, or includes it while p < 0.05 (few samples that only one model gets
    right, ``only_first`` / ``only_second``: the score interval and the exact binomial test are two methods, which
    part at small counts). A reader seeing the interval alone would call the gap significant, or not; the note says
    both, and that the exact test is the conservative reading. ``[]`` where they agree or a value is not finite."""
    low, high = interval
    if not all(math.isfinite(v) for v in (low, high, p_value)):
        return []
    excludes = low > 0 or high < 0
    if excludes == (p_value < ALPHA):
        return []
    said = "excludes 0 while McNemar's exact p is" if excludes else "includes 0 while McNemar's exact p is"
    return [f"{models}, {accuracy}: the 95% interval {said} {p_value_text(p_value)} ({only_first} vs {only_second} "
            "samples right under one model alone): at so few such samples the two methods disagree; the exact test "
            "is the conservative reading of whether the gap is significant."]
