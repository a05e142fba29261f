"""Noise matrices: a noise probe's score, and its accuracy per level, across kWTA activation sparsity ``k/N`` ×
weight sparsity.

Ahmad & Scheinkman 2019 ("How Can We Be So Dense?") compare sparse and dense networks by their *noise score*: the
correct classifications summed over the noise levels (``attacks.noise``; ``numenta``: a fraction ``eta`` of the
pixels set to one bright value, ``eta = 0, 0.05, ..., 0.5``), averaged over the draws. :mod:`kwta_robust.matrix`
renders one matrix per noise probe the records ran with the same settings (:func:`kwta_robust.paired.noise_settings`:
kind, levels, draws, params such as ``value``, seed, so the same noisy inputs): cells that ran a probe of that kind
with other settings drew other noise and sit in a matrix of their own, never mixed (a legend line says so).

A cell (:class:`NoiseScore`) is the record's ``noise[i].result["noise_score"]`` on its ``n`` samples (0 to
``levels × n``) and, as a fraction, the score per image and level, with the score's 95% interval where the record
holds per-sample counts (``correct_counts``) and ``n ≥ 30``: ``n ×`` the t interval of the mean per-sample score
(:func:`kwta_robust.noise_ci.score_interval`, Student 1908; a sum over levels of the same images is no binomial
proportion, so no Wilson interval). A record without those counts, or on fewer samples, shows the score alone.

With ``levels=True`` (``table --matrix``) each score matrix is followed by a matrix per noise level but 0 (the clean
input, the clean-accuracy matrix): the accuracy at that level (:class:`NoiseLevel`) with its 95% interval (Wilson with
one draw, a binomial proportion; the t interval over the images with several, from 30 samples;
:func:`kwta_robust.noise_ci.level_intervals`), the accuracy alone without per-sample counts.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from kwta_robust.errors import is_finite_number
from kwta_robust.noise_ci import (INTERVAL_LEGEND, MIN_T_SAMPLES, T_OVER_IMAGES, WILSON, level_interval,
                                  methods_text, probe_samples, score_interval)
from kwta_robust.noise_notes import probe_name, probe_settings
from kwta_robust.numbers import number_text
from kwta_robust.paired import noise_settings
from kwta_robust.report import Cell
from kwta_robust.results import EvalRecord, NoiseResult

@dataclass(frozen=True)
class NoiseScore:
    """One noise-matrix cell: ``score`` correct classifications summed over ``levels`` noise levels and averaged
    over ``draws`` draws, on ``n`` samples (Ahmad & Scheinkman 2019), with its 95% interval ``score_low`` to
    ``score_high`` (NaN: none, module docstring). :attr:`accuracy` is the score per image and level (a fraction),
    ``ci_low``/``ci_high`` its interval on that scale."""

    score: float
    n: int
    levels: int
    draws: int
    score_low: float = math.nan
    score_high: float = math.nan

    @property
    def correct(self) -> float:
        """The score itself (the long table's ``correct`` column: correct classifications, averaged over draws)."""
        return self.score

    @property
    def accuracy(self) -> float:
        """The score per image and level, ``score / (levels × n)`` (NaN without levels or samples)."""
        return self.score / (self.levels * self.n) if self.levels * self.n else math.nan

    @property
    def ci_low(self) -> float:
        """The interval's lower bound per image and level (NaN: no interval)."""
        return self.score_low / (self.levels * self.n) if self.levels * self.n else math.nan

    @property
    def ci_high(self) -> float:
        """The interval's upper bound per image and level (NaN: no interval)."""
        return self.score_high / (self.levels * self.n) if self.levels * self.n else math.nan

    @property
    def text(self) -> str:
        """``2661`` (the score as the wide table prints it)."""
        return number_text(float(self.score))


@dataclass(frozen=True)
class NoiseLevel:
    """A per-level noise-matrix cell, read as an :class:`~kwta_robust.results.Accuracy` is: the accuracy at one noise
    level on ``n`` samples, ``correct`` the correct classifications averaged over the ``draws``, with its 95% interval
    (NaN: none; :func:`kwta_robust.noise_ci.level_intervals`)."""

    n: int
    correct: float
    accuracy: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    draws: int = 1


@dataclass(frozen=True)
class NoiseMetric:
    """A noise matrix's probe: ``kind`` and :func:`~kwta_robust.paired.noise_settings`, with its legend ``note``;
    ``level``: the index of the level a per-level matrix shows (``None``: the score)."""

    kind: str
    settings: dict[str, Any]
    note: str
    level: int | None = None


def _settings_key(probe: NoiseResult) -> tuple[str, str]:
    return probe.kind, json.dumps(noise_settings(probe), sort_keys=True, default=str)


def _settings_text(probe: NoiseResult) -> str:
    """The probe's settings in the words of the other noise notes (``1 draw``, ``noise pixel value 1``; the legend
    wrote ``1 draw(s)``, ``value=1``) and its seed."""
    return f"{probe_settings(probe)}, seed {probe.seed}"


def _score_source(kind: str) -> str:
    """Where the score comes from: Ahmad & Scheinkman (2019) defined it for their pixel noise (``numenta``) alone; the
    other probes' scores are the same sum over their own levels, not a number of the paper."""
    if kind == "numenta":
        return "Ahmad & Scheinkman 2019"
    return (f"Numenta's score (Ahmad & Scheinkman 2019) taken over the {kind} probe's levels, not the paper's pixel "
            "noise")


def noise_metrics(records: Sequence[EvalRecord], levels: bool = False) -> dict[str, NoiseMetric]:
    """A matrix metric per distinct noise probe (kind and settings) the records ran, in order of appearance:
    ``noise numenta``, or ``noise numenta [2]`` for the second settings of one kind (its note names them); with
    ``levels``, after each a metric per level but 0 (``noise numenta level 0.05``, :func:`level_metrics`)."""
    found: dict[tuple[str, str], NoiseResult] = {}
    cells: dict[tuple[str, str], list[tuple[NoiseResult, int]]] = {}  # per probe, each record's with its samples
    for rec in records:
        for probe in rec.noise:
            found.setdefault(_settings_key(probe), probe)
            cells.setdefault(_settings_key(probe), []).append((probe, probe_samples(probe, rec)))
    per_kind = Counter(kind for kind, _ in found)
    seen: Counter[str] = Counter()
    out: dict[str, NoiseMetric] = {}
    for key, probe in found.items():
        kind = key[0]
        seen[kind] += 1
        name = probe_name(kind, seen[kind], per_kind[kind])  # as the paired rows and the notes name a probe
        apart = (f"; the cells ran {kind} with {per_kind[kind]} settings, other noise each: a matrix per settings, "
                 "never mixed") if per_kind[kind] > 1 else ""
        note = (f"{name}: noise score of the {kind} probe ({_settings_text(probe)}; {_score_source(kind)}): "
                f"correct classifications summed over the {len(probe.levels)} levels and averaged over the draws, on "
                f"the cell's n samples (0 to {len(probe.levels)} × n; per image and level in % in the long table's "
                f"accuracy column), in parentheses its {INTERVAL_LEGEND} (levels and draws of the same images are no "
                f"binomial proportion: no Wilson interval); — = the cell's record ran no such probe{apart}")
        out[name] = NoiseMetric(kind, noise_settings(probe), note)
        if levels:
            out.update(level_metrics(name, probe, cells[key]))
    return out


def level_metrics(name: str, probe: NoiseResult,
                  cells: Sequence[tuple[NoiseResult, int]] = ()) -> dict[str, NoiseMetric]:
    """``name``'s per-level metrics: a matrix per level of ``probe`` but level 0 (the clean input: the clean-accuracy
    matrix shows it), the accuracy at that level in % with its 95% interval (module docstring). They share one note,
    which the legend (:func:`kwta_robust.matrix.legend`, each note once) prints once for all of them: each matrix's
    title names its level, the one thing that differs (the 11 numenta levels printed 10 notes of ~400 characters
    that differed in the level alone). The note names the interval methods its cells show (``cells``: each record's
    probe with its samples, :func:`~kwta_robust.noise_ci.methods_text`; none given: the rule), not one they lack."""
    texts = level_texts(probe.levels)
    shown = [(i, texts[i]) for i, level in enumerate(probe.levels) if float(level) != 0.0]
    methods = methods_text(cells, noisy=True) if cells else \
        WILSON if probe.draws == 1 else f"{T_OVER_IMAGES}, from {MIN_T_SAMPLES} samples"
    lacking = "" if probe.draws == 1 else f" on {MIN_T_SAMPLES} samples or more, which a t interval over several " \
        "draws needs"  # one draw: Wilson's interval needs the counts alone, at any n
    interval = (f"with its 95% interval ({methods}) where the record holds per-sample counts (correct_counts), else "
                "the accuracy alone" if methods else f"the accuracy alone (no cell holds per-sample counts "
                f"(correct_counts){lacking})")
    note = (f"{name} level L (a matrix per level of the probe but 0, the clean input; its title names L): accuracy "
            f"of the {probe.kind} probe ({_settings_text(probe)}) at level L in % over the cell's n samples, averaged "
            f"over the draws, {interval}; — = the cell's record ran no such probe")
    return {f"{name} level {text}": NoiseMetric(probe.kind, noise_settings(probe), note, i) for i, text in shown}


def level_texts(levels: Sequence[float]) -> list[str]:
    """Each noise level as a matrix or column name writes it: ``f"{level:g}"`` (``0.25``), or where two levels
    read alike so (6 significant digits: ``0.3`` and ``0.1 * 3``, which a probe takes as two levels) their
    ``repr`` (``0.30000000000000004``), so that no level's matrix or column takes another's name."""
    short = [f"{float(level):g}" for level in levels]
    return [text if short.count(text) == 1 else repr(float(level)) for text, level in zip(short, levels)]


def noise_value(record: EvalRecord, metric: NoiseMetric) -> NoiseScore | NoiseLevel | None:
    """``record``'s score (or, for a level's metric, its accuracy at that level) on ``metric``'s probe (same kind
    and settings), with its interval where it has one; ``None`` if it ran none or holds no number. Its samples are
    :func:`~kwta_robust.noise_ci.probe_samples`' (``num_samples``, else the record's ``n``: a ``null`` one too), as
    the notes and the HTML take them."""
    probe = metric_probe(record, metric)
    if probe is None:
        return None
    score, n = probe.result.get("noise_score"), probe_samples(probe, record)  # null num_samples: the record's n
    if metric.level is not None:
        return _level_value(probe, n, metric.level)
    if not is_finite_number(score):
        return None
    bounds = score_interval(probe, n) or (math.nan, math.nan)
    return NoiseScore(float(score), n, len(probe.levels), probe.draws, *bounds)


def metric_probe(record: EvalRecord, metric: NoiseMetric) -> NoiseResult | None:
    """``record``'s first probe of ``metric``'s kind and settings (:func:`~kwta_robust.paired.noise_settings`), the
    one :func:`noise_value` reads; ``None`` if it ran none."""
    return next((p for p in record.noise if p.kind == metric.kind and noise_settings(p) == metric.settings), None)


def _level_value(probe: NoiseResult, n: int, level: int) -> NoiseLevel | None:
    accuracy = probe.result.get("accuracy")
    if not isinstance(accuracy, list) or level >= len(accuracy) or not is_finite_number(accuracy[level]):
        return None
    low, high = level_interval(probe, n, level) or (math.nan, math.nan)
    correct = round(float(accuracy[level]) * n * probe.draws) / probe.draws  # the counts over the draws
    return NoiseLevel(n, correct, float(accuracy[level]), low, high, probe.draws)


def correct_unit(value: Any) -> str:
    """What the matrices' long table's ``correct`` column counts for a cell ``value`` (its ``correct_unit`` column),
    so that ``correct`` over ``n`` is not read as a noise score's accuracy: ``images (of n)`` (an accuracy),
    ``images (of n), mean over 3 draws`` (a noise level, :class:`NoiseLevel`), ``image-levels (of 11 × n), mean over
    3 draws`` (a noise score, :class:`NoiseScore`: correct answers summed over the levels)."""
    draws = getattr(value, "draws", 1)
    mean = f", mean over {draws} draws" if draws != 1 else ""
    if isinstance(value, NoiseScore):
        return f"image-levels (of {value.levels} × n){mean or ', 1 draw'}"
    return f"images (of n){mean}"


def _bounds(low: float, high: float) -> tuple[float, float] | None:
    return (low, high) if is_finite_number(low) and is_finite_number(high) else None


def score_cell(value: NoiseScore | None, mark: str = "") -> Cell:
    """A matrix table's cell: the score with its interval where it has one, ``mark`` after it."""
    if value is None:
        return Cell(None, None, False, mark)
    return Cell(float(value.score), _bounds(value.score_low, value.score_high), False, mark, computed=True,
                count=True)


def percent_cell(value: NoiseScore) -> Cell:
    """The long table's accuracy cell: the score per image and level, in %, with its interval where it has one,
    rounded outward as the notes write it (:meth:`~kwta_robust.report.Cell.percent_bounds`)."""
    return Cell(value.accuracy, _bounds(value.ci_low, value.ci_high), True)
