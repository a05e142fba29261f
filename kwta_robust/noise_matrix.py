"""Noise-score matrices: a noise probe's score across kWTA activation sparsity ``k/N`` × weight sparsity.

Ahmad & Scheinkman 2019 ("How Can We Be So Dense?") compare sparse and dense networks by their *noise score*: the
correct classifications summed over the noise levels (``attacks.noise``; ``numenta``: a fraction ``eta`` of the
pixels set to one bright value, ``eta = 0, 0.05, ..., 0.5``), averaged over the draws. :mod:`kwta_robust.matrix`
renders one matrix per noise probe the records ran with the same settings (:func:`kwta_robust.paired.noise_settings`:
kind, levels, draws, params such as ``value``, seed, so the same noisy inputs): cells that ran a probe of that kind
with other settings drew other noise and sit in a matrix of their own, never mixed (a legend line says so).

A cell (:class:`NoiseScore`) is the record's ``noise[i].result["noise_score"]`` on its ``n`` samples (0 to
``levels × n``) and, as a fraction, the score per image and level. It has no interval: a sum over levels and draws of
the same images is no binomial proportion (the levels' verdicts are correlated), so the value is shown alone; the
paired comparison (``compare``) has the per-sample t interval of two records' difference.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from kwta_robust.errors import is_finite_number
from kwta_robust.numbers import number_text
from kwta_robust.paired import noise_settings
from kwta_robust.report import Cell
from kwta_robust.results import EvalRecord, NoiseResult

#: Start of a noise matrix's metric (``noise numenta``), as the paired rows name a probe.
NOISE_PREFIX = "noise "


@dataclass(frozen=True)
class NoiseScore:
    """One noise-matrix cell: ``score`` correct classifications summed over ``levels`` noise levels and averaged
    over ``draws`` draws, on ``n`` samples (Ahmad & Scheinkman 2019). :attr:`accuracy` is the score per image and
    level (a fraction); ``ci_low``/``ci_high`` are NaN: no interval (module docstring)."""

    score: float
    n: int
    levels: int
    draws: int

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
        return math.nan

    @property
    def ci_high(self) -> float:
        return math.nan

    @property
    def text(self) -> str:
        """``2661`` (the score as the wide table prints it)."""
        return number_text(float(self.score))


@dataclass(frozen=True)
class NoiseMetric:
    """A noise matrix's probe: ``kind`` and :func:`~kwta_robust.paired.noise_settings`, with its legend ``note``."""

    kind: str
    settings: dict[str, Any]
    note: str


def _settings_key(probe: NoiseResult) -> tuple[str, str]:
    return probe.kind, json.dumps(noise_settings(probe), sort_keys=True, default=str)


def _settings_text(probe: NoiseResult) -> str:
    levels = " / ".join(f"{float(v):g}" for v in probe.levels)
    params = "".join(f", {k}={v:g}" if isinstance(v, float) else f", {k}={v}"
                     for k, v in sorted((probe.result.get("params") or {}).items()))
    return f"levels {levels}, {probe.draws} draw(s){params}, seed {probe.seed}"


def noise_metrics(records: Sequence[EvalRecord]) -> dict[str, NoiseMetric]:
    """A matrix metric per distinct noise probe (kind and settings) the records ran, in order of appearance:
    ``noise numenta``, or ``noise numenta [2]`` for the second settings of one kind (its note names them)."""
    found: dict[tuple[str, str], NoiseResult] = {}
    for rec in records:
        for probe in rec.noise:
            found.setdefault(_settings_key(probe), probe)
    per_kind = Counter(kind for kind, _ in found)
    seen: Counter[str] = Counter()
    out: dict[str, NoiseMetric] = {}
    for (kind, _), probe in found.items():
        seen[kind] += 1
        name = f"{NOISE_PREFIX}{kind}" + (f" [{seen[kind]}]" if per_kind[kind] > 1 else "")
        apart = (f"; the cells ran {kind} with {per_kind[kind]} settings, other noise each: a matrix per settings, "
                 "never mixed") if per_kind[kind] > 1 else ""
        note = (f"{name}: noise score of the {kind} probe ({_settings_text(probe)}; Ahmad & Scheinkman 2019): "
                f"correct classifications summed over the {len(probe.levels)} levels and averaged over the draws, on "
                f"the cell's n samples (0 to {len(probe.levels)} × n; per image and level in % in the long table's "
                "accuracy column); no interval: levels and draws of the same images are no binomial proportion; "
                f"— = the cell's record ran no such probe{apart}")
        out[name] = NoiseMetric(kind, noise_settings(probe), note)
    return out


def noise_value(record: EvalRecord, metric: NoiseMetric) -> NoiseScore | None:
    """``record``'s score on ``metric``'s probe (same kind and settings), ``None`` if it ran none or holds no
    number."""
    for probe in record.noise:
        if probe.kind != metric.kind or noise_settings(probe) != metric.settings:
            continue
        score, n = probe.result.get("noise_score"), probe.result.get("num_samples", record.clean.n)
        if not is_finite_number(score) or isinstance(n, bool) or not isinstance(n, int):
            return None
        return NoiseScore(float(score), n, len(probe.levels), probe.draws)
    return None


def score_cell(value: NoiseScore | None, mark: str = "") -> Cell:
    """A matrix table's cell: the score alone (no interval), ``mark`` after it."""
    return Cell(None if value is None else float(value.score), None, False, mark)


def percent_cell(value: NoiseScore) -> Cell:
    """The long table's accuracy cell: the score per image and level, in %, no interval bounds."""
    return Cell(value.accuracy, None, True)
