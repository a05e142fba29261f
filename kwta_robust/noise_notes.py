"""The notes that describe noise probes under the record tables (:mod:`kwta_robust.report`, :mod:`kwta_robust.narrow`,
the HTML report): the "noise score" column's legend (Numenta's score, Ahmad & Scheinkman 2019), the probes no column
shows with their noise score and accuracy per level, and the long table's note per probe. Where a record holds
per-sample counts the score and the accuracy per level carry their 95% interval (:mod:`kwta_robust.noise_ci`: a t
interval over the images for the score, Wilson per level with one draw and at level 0); a record without them
(written before they were kept), or one below 30 images for a t interval, shows the numbers alone, as the legend
says.

Every table, note and matrix names a probe one way (:func:`probe_name`): ``noise KIND``, and ``noise KIND [i]``, the
i-th (from 1) of its kind, where there are several (``noise numenta [2]``: ``noise.yaml``'s numenta probe of pixel value
0.7469). The paired rows wrote ``noise[1] numenta`` (the record's 0-based list index) or the bare kind, the notes
the settings alone.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from kwta_robust.errors import is_finite_number
from kwta_robust.noise_ci import (INTERVAL_LEGEND, interval_text, numenta_probes, per_image_bounds_text, per_level_text,
                                  probe_samples, score_interval)
from kwta_robust.numbers import count_text, number_text, percent_text
from kwta_robust.results import EvalRecord, NoiseResult


#: How every probe's name starts (``noise numenta``), as the paired rows, the notes and the matrices name it.
NOISE_PREFIX = "noise "


def probe_name(kind: str, ordinal: int = 1, of: int = 1) -> str:
    """A noise probe's name: ``noise numenta``, or ``noise numenta [2]`` for the ``ordinal``-th (from 1) of ``of``
    probes of its kind (a record's, or a matrix's settings of that kind: :mod:`kwta_robust.noise_matrix`)."""
    return f"{NOISE_PREFIX}{kind}" + (f" [{ordinal}]" if of > 1 else "")


def probe_names(probes: Sequence[NoiseResult]) -> list[str]:
    """Per probe of a record, ``[probes]``, its :func:`probe_name` (the i-th of its kind in the record's order)."""
    return kind_names([p.kind for p in probes])


def kind_names(kinds: Sequence[str]) -> list[str]:
    """Per entry of a list of noise probes' ``kinds`` (a record's ``noise``, a config's ``noise:``), its
    :func:`probe_name`: the protocol, the dry run and ``diff`` name a probe so, as every result table does."""
    counts, seen = Counter(kinds), Counter[str]()
    names = []
    for kind in kinds:
        seen[kind] += 1
        names.append(probe_name(kind, seen[kind], counts[kind]))
    return names


def _score_interval_text(probe: NoiseResult, record: EvalRecord) -> str:
    """`` (95% interval 1480–1598)`` after a probe's noise score, empty where it has none (:func:`score_interval`)."""
    bounds = score_interval(probe, probe_samples(probe, record))
    return "" if bounds is None else f" (95% interval {interval_text(*bounds)})"


#: How the notes name a noise probe's parameters (others by their config key).
_PARAM_TEXT = {"value": "noise pixel value"}


def param_text(value: Any) -> str:
    """A noise probe's parameter: a float as ``:g`` writes it, no value (``null``: a record writes NaN and infinity
    so) as ``none``, as the protocol writes it (it was Python's ``None``)."""
    return f"{value:g}" if isinstance(value, float) else "none" if value is None else str(value)


def params_text(params: Mapping) -> str:
    """A noise probe's parameters as every note names them: ``noise pixel value 1`` (others by their config key)."""
    return ", ".join(f"{_PARAM_TEXT.get(k, k)} {param_text(v)}" for k, v in params.items())


def probe_settings(probe: NoiseResult) -> str:
    """A noise probe's settings as every note and legend names them: ``levels 0 / 0.05, 1 draw, noise pixel
    value 1``."""
    params = probe.result.get("params") or {}
    shown = f", {params_text(params)}" if params else ""
    return f"levels {' / '.join(f'{lv:g}' for lv in probe.levels)}, {count_text(probe.draws, 'draw')}{shown}"


def per_image_score(probe: NoiseResult) -> float | None:
    """The score per image and level, a fraction (``noise_score_normalized``; computed for records that predate it),
    ``None`` where the record holds neither."""
    value, score = probe.result.get("noise_score_normalized"), probe.result.get("noise_score")
    n = probe.result.get("num_samples")
    if not is_finite_number(value) and is_finite_number(score) and is_finite_number(n) and n and probe.levels:
        value = float(score) / (len(probe.levels) * n)
    return float(value) if is_finite_number(value) else None


def _per_image_text(probe: NoiseResult, record: EvalRecord) -> str:
    """The score per image and level (:func:`per_image_score`), with the score's interval on that scale where it has
    one, rounded outward as the score's bounds are (:func:`~kwta_robust.noise_ci.per_image_bounds_text`: never
    narrower than computed): ``70.0% (66.6–73.3)`` for the bounds 66.69% and 73.21%."""
    value = per_image_score(probe)
    if value is None:
        return "—"
    n = probe_samples(probe, record)
    bounds = score_interval(probe, n)
    if bounds is None:
        return f"{percent_text(value)}%"
    scale = len(probe.levels) * n
    return f"{percent_text(value)}% ({'–'.join(per_image_bounds_text(bounds[0] / scale, bounds[1] / scale))})"


def noise_score_notes(records: Sequence[EvalRecord]) -> list[str]:
    """What the "noise score" column holds (:meth:`EvalRecord.noise_score`): Numenta's pixel-noise score of each
    record's first ``numenta`` probe, a count that grows with the images evaluated, so also per image and level;
    its settings; and any further numenta probe the column leaves out."""
    scored = [(rec, numenta_probes(rec)) for rec in records]
    scored = [(rec, probes) for rec, probes in scored if probes]
    if not scored:
        return []
    settings = {probe_settings(probes[0]) for _, probes in scored}
    per_image = ", ".join(
        (f"{rec.label} " if len(scored) > 1 else "") + _per_image_text(probes[0], rec)
        + ("" if len(settings) == 1 else f" ({probe_settings(probes[0])})") for rec, probes in scored)
    notes = [f"noise score: Numenta's pixel-noise score (Ahmad & Scheinkman 2019), correct classifications summed over "
             f"the noise levels and averaged over draws on the n images evaluated (the paper counts MNIST's 10,000 "
             f"test images){'; ' + settings.pop() if len(settings) == 1 else ''}; per image and level: {per_image}; in "
             f"parentheses, here and in the noise score column: the score's {INTERVAL_LEGEND}"]
    for rec, probes in scored:
        if len(probes) > 1:
            names = dict(zip(map(id, rec.noise), probe_names(rec.noise)))
            others = "; ".join(_probe_text(p, rec, names[id(p)], levels=False) for p in probes[1:])
            notes.append(f"[{rec.label}] the noise score column shows {names[id(probes[0])]}, the first of "
                         f"{len(probes)} numenta probes; the others: {others}")
    return notes


def other_noise_notes(records: Sequence[EvalRecord]) -> list[str]:
    """The noise probes no column shows (every kind but ``numenta``: Gaussian, uniform, salt-and-pepper), per record
    with their noise score and accuracy per level, each with its interval, as the long table's notes give them
    (:func:`probe_notes`; compare's notes lacked the score and its interval): without this note ``compare`` with
    ``noise.yaml`` printed three of its five probes nowhere."""
    prefix = len(records) > 1
    return [f"{f'[{rec.label}] ' if prefix else ''}{_probe_text(probe, rec, name)}"
            for rec in records for probe, name in zip(rec.noise, probe_names(rec.noise)) if probe.kind != "numenta"]


def _probe_text(probe: NoiseResult, record: EvalRecord, name: str, levels: bool = True) -> str:
    """``noise gaussian: levels 0 / 0.1, 3 draws, noise score 215 (95% interval 198–232), accuracy % per level ...``:
    a probe named ``name`` (:func:`probe_names`), its settings, noise score and (``levels``) accuracy % per level,
    each with its 95% interval where the record holds per-sample counts (:mod:`kwta_robust.noise_ci`)."""
    score = probe.result.get("noise_score")
    n = probe_samples(probe, record)
    per_level = f", {per_level_text(probe, n)}" if levels and probe.result.get("accuracy") else ""
    return (f"{name}: {probe_settings(probe)}"
            + (f", noise score {number_text(score)}{_score_interval_text(probe, record)}"  # as the tables
               if is_finite_number(score) else "") + per_level)


def probe_notes(record: EvalRecord) -> list[str]:
    """The long table's note per noise probe (:func:`_probe_text`)."""
    return [_probe_text(probe, record, name) for probe, name in zip(record.noise, probe_names(record.noise))]
