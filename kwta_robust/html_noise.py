"""The noise section of the HTML report (:mod:`kwta_robust.html_records`): accuracy vs noise level per probe and
model as a chart, and a table of every probe's noise score (Numenta's pixel-noise score, Ahmad & Scheinkman 2019)
with its 95% interval over the images, the score per image and level and the accuracy per level with its interval
(:mod:`kwta_robust.noise_ci`), as the notes under the record tables and ``quickstart.md`` give them.
"""

from __future__ import annotations

from typing import Sequence

from kwta_robust.html import Markup, Section, el, simple_table
from kwta_robust.noise_ci import (INTERVAL_LEGEND, level_texts, methods_text, per_image_bounds_text, probe_samples,
                                  score_interval)
from kwta_robust.noise_notes import NOISE_PREFIX, params_text, per_image_score, probe_names
from kwta_robust.numbers import percent_text
from kwta_robust.report import Cell, cell_text
from kwta_robust.results import EvalRecord, NoiseResult
from kwta_robust.svg import DASHES, Axis, Point, Series, colour, line_chart


def _probe_params(probe: NoiseResult) -> str:
    """`` (noise pixel value 1)``: a probe's parameters in the words of the notes (it read ``(value=1)``)."""
    params = probe.result.get("params") or {}
    return f" ({params_text(params)})" if params else ""


def _printed_names(record: EvalRecord) -> list[str]:
    """Per probe of ``record``, its name as the probe column prints it: ``noise numenta [2] (noise pixel value 1)``
    (:func:`~kwta_robust.noise_notes.probe_names` and its params)."""
    return [name + _probe_params(probe) for probe, name in zip(record.noise, probe_names(record.noise))]


def noise_section(records: Sequence[EvalRecord]) -> Section | None:
    """Accuracy under the noise probes (``None`` without noise results): a chart per probe as the probe column prints
    its name (a series per record that ran it), then the table. The charts grouped the probes by kind and params,
    so two probes of one kind and params (other seeds or draws: other noise) were one chart, a model's two series
    under one label."""
    probes = list(dict.fromkeys(name for rec in records for name in _printed_names(rec)))
    if not probes:
        return None
    charts, rows, shown = [], [], []
    for name in probes:
        series, title = [], ""
        for i, rec in enumerate(records):
            for probe, printed, probe_name in zip(rec.noise, _printed_names(rec), probe_names(rec.noise)):
                acc = probe.result.get("accuracy")
                if printed != name or not isinstance(acc, list):
                    continue
                ordinal = probe_name.removeprefix(f"{NOISE_PREFIX}{probe.kind}")  # " [2]" of noise numenta [2]
                title = f"accuracy under {probe.kind} noise{ordinal}{_probe_params(probe)}"  # numenta noise [2] (...)
                pts = [Point(float(lv), float(a), tip=f"{rec.label}: {name} level {lv:g}: {percent_text(a)}%")
                       for lv, a in zip(probe.levels, acc) if isinstance(a, (int, float))]
                series.append(Series(rec.label, pts, colour(i), DASHES[i % len(DASHES)]))
                n, score = probe_samples(probe, rec), probe.result.get("noise_score")
                shown.append((probe, n))
                rows.append([rec.label, printed, probe.levels, probe.draws,
                             probe.result.get("num_samples"),
                             cell_text(Cell(float(score), score_interval(probe, n)))
                             if isinstance(score, (int, float)) else score, _per_image(probe, n),
                             level_texts(probe, n)])
        levels = sorted({p.x for s in series for p in s.points})
        if series:
            charts.append(line_chart(series, title=title,
                                     x_axis=Axis("noise level", [(lv, f"{lv:g}") for lv in levels])))
    headers = ["model", "probe", "levels", "draws", "samples", "noise score", "per image and level %",
               "accuracy % per level"]
    intro = el("p", "Accuracy under random noise of growing level (no adversary); the Numenta noise score is the total "
                    "number of correct predictions over all levels (Ahmad & Scheinkman 2019). In parentheses: the "
                    f"score's {INTERVAL_LEGEND}; per level, {_level_legend(shown)}. The "
                    "probe column names each probe as the notes and the paired rows do (noise numenta [2]: the "
                    "second of its kind in the record).")
    body = intro + el("div", [el("figure", Markup(c)) for c in charts], class_="charts")
    return Section("noise", "Noise", Markup(body + simple_table(headers, rows, numeric=(3, 4, 5, 6))))


def _level_legend(shown: Sequence[tuple[NoiseResult, int]]) -> str:
    """What the per-level column's parentheses hold, naming only the interval methods of the rows ``shown`` (each
    probe with its samples, :func:`~kwta_robust.noise_ci.methods_text`): it named Wilson and the t interval from 30
    images whatever the rows showed (quickstart's one draw: Wilson alone)."""
    methods = methods_text(shown)
    return f"the accuracy's 95% interval ({methods})" if methods else "the accuracy alone (no interval)"


def _per_image(probe: NoiseResult, n: int) -> str:
    """The score per image and level in %, as the notes write it (``70.0``, :func:`per_image_score`; it was the raw
    fraction ``0.6995454545454546``), with the score's 95% interval on that scale where it has one, as the notes and
    quickstart.md give it, rounded outward (``70.0 (66.6–73.3)``, :func:`per_image_bounds_text`; :func:`score_interval`
    on ``n`` samples over levels × n); ``—`` where the record holds none."""
    value = per_image_score(probe)
    if value is None:
        return "—"
    bounds = score_interval(probe, n)
    scale = len(probe.levels) * n
    return percent_text(value) + (f" ({'–'.join(per_image_bounds_text(bounds[0] / scale, bounds[1] / scale))})"
                                  if bounds is not None and scale else "")
