"""95% intervals of noise results on one record's samples (a noise score, its accuracy per level).

A noise probe (:mod:`attacks.noise`) records per level and sample in how many of its draws the sample was classified
correctly (``result["correct_counts"]``, ``[levels][n]``). Each sample's *score* is that summed over the levels and
divided by the draws (:func:`sample_scores`, 0 to ``len(levels)``); the scores sum to Ahmad & Scheinkman's (2019)
noise score. The samples are i.i.d. draws of the test set, so their scores are i.i.d. too (bounded), and the noise
score, ``n ×`` their mean, has the one-sample t interval of the mean scaled by ``n`` (:func:`score_interval`:
Student 1908, ``n · (mean ± t_{0.975, n-1} · sd / sqrt(n))``, clipped to ``[0, levels × n]``). A sum over the levels
of the same images is no binomial proportion (the levels' verdicts of one image are correlated): the t interval over
images is the one that holds. Where every image scores alike (sd 0) the interval has no width, as the t formula
gives it.

**One rule for every t interval of noise results** (:func:`mean_interval`): the score's, a level's with several
draws, and the paired comparison's mean per-sample difference (:mod:`kwta_robust.paired`) are each the t interval of
a mean of bounded per-image values, which may be skewed (many images at the top score) or lumpy (many paired
differences exactly 0): the t interval is the central limit theorem's there, not an exact one, so each is given from
:data:`MIN_T_SAMPLES` (30) images on, the usual rule of thumb, and below that the number is shown alone (the paired
rows' exact sign test needs no such rule). The paired differences were given a t interval at any ``n`` before, with
the same reasoning (bounded, so close to normal "at the sizes evaluated") that made the score wait for 30 images.

A proportion gets the Wilson interval (:func:`~kwta_robust.results.wilson_interval`), as every accuracy of a record,
at any ``n`` (:func:`level_intervals`): the accuracy at one level with one draw (each image right or wrong), and at
level 0 whatever the draws: the clean input, judged once and counted in every draw (:mod:`attacks.noise`), so the
clean accuracy, which the clean column shows with the same interval (with several draws it was given the t interval
of the draws, a second interval for one number).

The t quantile and interval live here (:mod:`kwta_robust.paired` re-exports them for the paired noise rows), so that
:mod:`kwta_robust.report` can use them without importing the paired comparison, which imports it.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from kwta_robust.errors import is_finite_number
from kwta_robust.numbers import interval_percent_texts, number_text, percent_text
from kwta_robust.results import EvalRecord, NoiseResult, wilson_interval

#: Fewest samples for a t interval of a noise result (the central limit theorem's rule of thumb): the score's, a
#: level's with several draws, the paired rows' mean difference (:func:`mean_interval`).
MIN_T_SAMPLES = 30

#: The rule of every t interval of noise results, as the legends state it.
T_RULE = f"given from n ≥ {MIN_T_SAMPLES} images, as every t interval of the noise results"

#: How a legend says which noise numbers carry an interval.
INTERVAL_LEGEND = (
    "95% interval over the images (n × the t interval of the mean per-image score, Student 1908), given where the "
    f"record holds per-image counts (correct_counts) and n ≥ {MIN_T_SAMPLES}; else the score is shown alone")

#: How a level's accuracy gets its interval (:func:`level_methods`): a proportion's, or the t interval over the images.
WILSON, T_OVER_IMAGES = "Wilson", "t over the images"


#: Student's t quantiles ``t_{0.975, df}`` for ``df`` 1 to 10, below which the expansion of :func:`t_quantile_975` is
#: off by more than 1e-5 (12.7 at 1 degree of freedom, where it gives 11.3).
_T975 = (12.706204736174694, 4.302652729749462, 3.1824463052837078, 2.7764451051977934, 2.5705818356363146,
         2.4469118511449786, 2.364624251592784, 2.306004135204166, 2.262157162798205, 2.228138851986274)
_Z975 = 1.959963984540054  # the standard normal quantile at 0.975


def t_quantile_975(df: int) -> float:
    """Student's t quantile at 0.975 with ``df`` degrees of freedom (the two-sided 95% interval's; ``nan`` below 1):
    tabulated up to 10, above it the Cornish-Fisher expansion about the normal quantile (Abramowitz & Stegun
    1964, 26.7.5; off by less than 5e-6 at 11 and 3e-9 from 50)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = _Z975, float(df)
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3)
            + (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / (92160 * v ** 4))


def paired_t_interval(differences: Sequence[float]) -> tuple[float, float]:
    """95% t interval of the mean of ``differences`` (Student 1908): ``mean ± t_{0.975, n-1} · sd / sqrt(n)`` with
    the sample standard deviation; ``(nan, nan)`` below two values. The paired comparison passes per-sample
    differences, :func:`score_interval` a record's per-sample scores (a one-sample interval, the same formula)."""
    n = len(differences)
    if n < 2:
        return (math.nan, math.nan)
    mean = math.fsum(differences) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in differences) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def mean_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The 95% t interval of the mean of per-image ``values`` (:func:`paired_t_interval`) under the one rule of
    every t interval of noise results: ``None`` below :data:`MIN_T_SAMPLES` values (module docstring)."""
    return paired_t_interval(values) if len(values) >= MIN_T_SAMPLES else None


def probe_samples(probe: NoiseResult, record: EvalRecord) -> int:
    """The samples ``probe`` ran on (``num_samples``, else the record's ``n``)."""
    n = probe.result.get("num_samples")
    return n if isinstance(n, int) and not isinstance(n, bool) else record.clean.n


def _counts(probe: NoiseResult, n: int) -> list[list[float]] | None:
    counts = probe.result.get("correct_counts")
    if not isinstance(counts, list) or len(counts) != len(probe.levels) or not probe.draws \
            or any(not isinstance(row, list) or len(row) != n for row in counts):
        return None
    return counts


def sample_scores(probe: NoiseResult, n: int) -> list[float] | None:
    """Per sample, ``[n]``: its ``correct_counts [levels][n]`` summed over the levels and divided by the draws; ``None``
    where the record holds no such counts (``[]`` for a probe without levels)."""
    counts = _counts(probe, n)
    return None if counts is None else [math.fsum(column) / probe.draws for column in zip(*counts)]


def score_interval(probe: NoiseResult, n: int) -> tuple[float, float] | None:
    """95% interval of ``probe``'s noise score on its ``n`` samples, on the score's scale: ``n ×`` the t interval of
    the mean per-sample score, clipped to ``[0, levels × n]`` (module docstring); ``None`` without per-sample counts
    or below :data:`MIN_T_SAMPLES` samples (:func:`mean_interval`)."""
    scores = sample_scores(probe, n)
    bounds = None if scores is None else mean_interval(scores)
    if bounds is None:
        return None
    return (max(bounds[0], 0.0) * n, min(bounds[1], float(len(probe.levels))) * n)


def level_intervals(probe: NoiseResult, n: int) -> list[tuple[float, float] | None] | None:
    """Per level, ``[levels]``: the 95% interval of its accuracy (a fraction): Wilson with one draw and at level 0
    (the clean input, a proportion whatever the draws), else the t interval of the per-sample fractions clipped to
    ``[0, 1]``, ``None`` below :data:`MIN_T_SAMPLES` samples; ``None`` for all without per-sample counts."""
    counts = _counts(probe, n)
    return None if counts is None else [_row_interval(probe, i, row, n) for i, row in enumerate(counts)]


def level_interval(probe: NoiseResult, n: int, level: int) -> tuple[float, float] | None:
    """:func:`level_intervals`' entry ``level`` alone (a matrix per level takes one: not every level's, per level)."""
    counts = _counts(probe, n)
    return None if counts is None else _row_interval(probe, level, counts[level], n)


def _row_method(probe: NoiseResult, level: int, row: list[float], n: int) -> str | None:
    """How level ``level``'s interval is taken from its ``correct_counts`` row, ``[n]``: :data:`WILSON` with one draw
    and at level 0 (judged once and counted in every draw, so each image is right in all draws or in none: a number
    of images; a row that is not, only a hand-edited record's, keeps the t interval of its fractions), else
    :data:`T_OVER_IMAGES` from :data:`MIN_T_SAMPLES` images, ``None`` (no interval) below."""
    draws = probe.draws
    if draws == 1 or (float(probe.levels[level]) == 0.0 and all(c == 0 or c == draws for c in row)):
        return WILSON
    return T_OVER_IMAGES if n >= MIN_T_SAMPLES else None


def _row_interval(probe: NoiseResult, level: int, row: list[float], n: int) -> tuple[float, float] | None:
    """Level ``level``'s interval from its ``correct_counts`` row, ``[n]`` (:func:`level_intervals`,
    :func:`_row_method`)."""
    draws = probe.draws
    if _row_method(probe, level, row, n) == WILSON:
        return wilson_interval(int(round(math.fsum(row) / draws)), n)
    bounds = mean_interval([c / draws for c in row])
    return None if bounds is None else (max(bounds[0], 0.0), min(bounds[1], 1.0))


def level_methods(probe: NoiseResult, n: int) -> list[str | None] | None:
    """Per level, ``[levels]``, how :func:`level_intervals` takes its interval (:data:`WILSON`, :data:`T_OVER_IMAGES`,
    ``None``: none, below :data:`MIN_T_SAMPLES` images); ``None`` without per-sample counts."""
    counts = _counts(probe, n)
    return None if counts is None else [_row_method(probe, i, row, n) for i, row in enumerate(counts)]


def methods_text(probes: Iterable[tuple[NoiseResult, int]], noisy: bool = False) -> str:
    """The legend of the per-level intervals of ``probes`` (each with its samples ``n``) that a table shows, naming
    only the methods that appear there (:func:`level_methods`; ``noisy``: the levels but 0 alone): ``Wilson`` (one
    draw), ``Wilson at level 0, else t over the images`` (several draws, from :data:`MIN_T_SAMPLES` images), ``Wilson
    at level 0, else none below 30 images`` (several draws, fewer images: the legend said ``else t`` where no level
    had one); ``""`` where no level has an interval. Where several probes or sample counts differ, it joins their
    cases: ``Wilson at level 0 and with one draw, else t over the images from n = 30, none below``."""
    facts = set()
    for probe, n in probes:
        for level, method in zip(probe.levels, level_methods(probe, n) or []):
            if not (noisy and float(level) == 0.0):
                facts.add((method, probe.draws == 1))
    if not any(method for method, _ in facts):
        return ""
    at = [where for where, on in (("level 0", (WILSON, False) in facts), ("with one draw", (WILSON, True) in facts))
          if on]
    several = {method for method, one in facts if not one and method != WILSON}  # the levels of several draws
    wilson = "" if not at else WILSON if not several and at == ["with one draw"] else \
        f"{WILSON} {'at ' if at[0] == 'level 0' else ''}{' and '.join(at)}"
    rest = (f"{T_OVER_IMAGES} from n = {MIN_T_SAMPLES}, none below" if several == {T_OVER_IMAGES, None} else
            T_OVER_IMAGES if several == {T_OVER_IMAGES} else f"none below {MIN_T_SAMPLES} images" if several else "")
    return ", else ".join(part for part in (wilson, rest) if part)


def numenta_probes(record: EvalRecord) -> list[NoiseResult]:
    """``record``'s ``numenta`` probes with a noise score, in its order (the first: :func:`numenta_probe`)."""
    return [p for p in record.noise if p.kind == "numenta" and p.result.get("noise_score") is not None]


def numenta_probe(record: EvalRecord) -> NoiseResult | None:
    """The probe whose score the tables' "noise score" column shows (:meth:`EvalRecord.noise_score`)."""
    return next(iter(numenta_probes(record)), None)


def record_score_interval(record: EvalRecord) -> tuple[float, float] | None:
    """The interval of the "noise score" column's score (:func:`score_interval`), ``None`` where none is given."""
    probe = numenta_probe(record)
    return None if probe is None else score_interval(probe, probe_samples(probe, record))


def score_bounds_text(low: float, high: float) -> tuple[str, str]:
    """A score interval's bounds as the tables write them: rounded outward to whole correct classifications
    (``1467.3`` to ``1610.7`` is ``1467`` to ``1611``: never narrower than computed, and short)."""
    return number_text(float(math.floor(low))), number_text(float(math.ceil(high)))


def per_image_bounds_text(low: float, high: float) -> tuple[str, str]:
    """The bounds of the score per image and level's interval (fractions) in %, rounded outward as the score's own
    bounds are (:func:`score_bounds_text`: never narrower than computed) and as every interval in % is
    (:func:`~kwta_robust.numbers.interval_percent_texts`): 0.66694 and 0.73214 are ``66.6`` and ``73.3``. The notes,
    the HTML noise table and heatmap, and the matrices' long table write them so."""
    return interval_percent_texts(low, high)


def interval_text(low: float, high: float, percent: bool = False) -> str:
    """``1467–1611`` (a score's bounds, :func:`score_bounds_text`) or, ``percent``, ``67.2–72.8`` (rounded outward,
    :func:`~kwta_robust.numbers.interval_percent_texts`); either way never narrower than computed."""
    if percent:
        return "–".join(interval_percent_texts(low, high))
    return "–".join(score_bounds_text(low, high))


def level_texts(probe: NoiseResult, n: int) -> list[str]:
    """Per entry of ``probe``'s accuracy list, ``[levels]``: the accuracy in % with its 95% interval where there is one
    (:func:`level_intervals`), ``85.0 (70.9–92.9)``; ``—`` where the record holds no number there (``null`` in a
    hand-edited or damaged record, read as "not measured" as a record's other nulls are; the per-level matrix shows
    no value there either). The notes and the HTML noise table write these."""
    accuracy = probe.result.get("accuracy")
    bounds = level_intervals(probe, n) or []
    return [percent_text(a) + (f" ({interval_text(*bounds[i], percent=True)})"
                               if i < len(bounds) and bounds[i] is not None else "")
            if is_finite_number(a) else "—" for i, a in enumerate(accuracy if isinstance(accuracy, list) else [])]


def per_level_text(probe: NoiseResult, n: int) -> str:
    """``accuracy % per level 85.0 / 70.0``, or with intervals where there are some: ``accuracy % per level (95%
    interval: Wilson) 85.0 (70.9–92.9) / 70.0 (54.6–81.9)`` (:func:`level_texts`: ``—`` for a level without a
    number)."""
    shown = methods_text([(probe, n)])  # the methods of the intervals shown, "" where none is
    method = f" (95% interval: {shown})" if shown else ""
    return f"accuracy % per level{method} " + " / ".join(level_texts(probe, n))
