"""The attack protocol of evaluation records as a table: what a paper's appendix lists (``kwta-robust table
--protocol``, and the HTML report's "attack parameters").

One row per attack label of each record (what it cost is the model's own: the same settings cost a kWTA model and
its ReLU twin different numbers of queries), with:

* ``threats``: the norms and epsilons it ran at (``Linf 0.1, 0.3; L2 0.5``);
* ``seed``: the evaluation's seed (every unit's seed derives from it, the label — ``transfer`` for every transfer
  attack — the norm and eps);
* ``queries/sample``: forward plus backward passes through the model per attacked sample, ``queries / n_attacked``
  over its threat points — a number in CSV and JSON;
* ``time (s)``: its wall time summed the same way;
* ``settings``: its effective hyperparameters (``AttackResult.settings``, :mod:`attacks.settings`) in compact text
  (:func:`settings_text`): ``steps 40, step size 2.5*eps/steps, restarts 1, loss ce, random start true``; an inner
  attack after ``;`` under its name, a BPDA attack's stages as one value per stage (``steps 100/150/400/1200``;
  ``—`` for a stage whose own inner attack has no such setting: ``loss ce/—``, explained in the legend only where
  a row shows one: :func:`stage_gap_notes`), any other list as one value (``[0.02, 0.1]``).
  A record written before settings were stored shows its given ``params``, marked ``defaults not recorded``. A BPDA
  attack that found no layer to act on in a model (its ``bpda_layers`` ``{}``: a ReLU twin) ran only its first
  stage's inner attack, unchanged; its settings first say so (:data:`NO_LAYER`). In ``md`` the settings are listed
  under the table, once for the models where they read the same (:func:`terminal_protocol`).

A row per noise probe of each record follows its attacks (label: its name in every result table,
:func:`~kwta_robust.noise_notes.probe_names`, ``noise numenta``, or ``noise numenta [2]`` for the config's second
numenta entry where it has several; it was ``noise[i]``, a name no other table used; kind ``noise``; threats: its
number of levels; seed: the evaluation's): its levels, draws, params (numenta's ``value``) and the seed of its draws
(derived from the evaluation seed and the entry) as its settings (:func:`noise_settings_text`); no queries are
counted.

Rendered through the table formats (:mod:`kwta_robust.formats`), so every format, a plug-in's included, works.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

from attacks.base import NORM_TITLES
from attacks.settings import COMPLETE_KEY, NOTE_KEY
from kwta_robust.errors import ConfigError
from kwta_robust.formats import get_format
from kwta_robust.narrow import WIDTH, terminal_markdown
from kwta_robust.noise_notes import probe_names
from kwta_robust.numbers import count_text, setting_value_text
from kwta_robust.report import Cell, Table, cell_text, partial_notes, record_name, threat_points
from kwta_robust.results import AttackResult, EvalRecord

HEADERS: tuple[str, ...] = ("model", "label", "attack", "kind", "threats", "seed", "queries/sample", "time (s)",
                            "settings")
#: Before the settings of a BPDA attack that found no layer to act on (its record's ``bpda_layers`` is ``{}``).
NO_LAYER = "acted on no layer, so only its first stage's inner attack ran, unchanged"
#: After the settings text of a record written before settings were stored.
NOT_RECORDED = "defaults not recorded: a record written before settings were stored"
NOTES: tuple[str, ...] = (
    "settings: each attack's effective hyperparameters as its record holds them (the given params and every "
    "default of the attack that ran; inner attacks after ';', a/b/c: one value per BPDA temperature stage, [a, b]: "
    "a list); the seed of every unit derives from the evaluation seed, its label (every transfer attack's: "
    "transfer), norm and eps.",
    "queries/sample: forward plus backward passes through the model per attacked sample (queries / attacked, over "
    "its threat points; a transfer attack runs on its source, 0 on the model); in cascade mode an attack runs only "
    "on the samples still robust.",
    "time (s): the attack's wall time summed over its threat points.",
)
#: The legend of ``—`` in a BPDA attack's one-value-per-stage settings (``loss ce/—``), given only where a settings
#: cell shows one (:func:`stage_gap_notes`), so protocols without such a stage read as before.
STAGE_GAP_NOTE = ("—: in a/b/c, a BPDA stage whose own inner attack (its stage_params inner) has no such setting "
                  "(loss ce/—: APGD-T, which has no loss setting, after APGD-CE).")
#: The legend of the noise probes' rows (:func:`protocol_table`, ``evaluate --dry-run``).
NOISE_NOTE = ("noise KIND (noise KIND [i]: the i-th of its kind in the config's noise list, where there are several; "
              "named as every result table names it): a noise probe of the config (random corruption, not an attack; "
              "no queries counted): its levels, draws, params and the seed of its draws, derived from the evaluation "
              "seed and the entry as "
              "written (kind, every level, draws, params): another level list, draw count or a default written out "
              "is another seed, which redraws every level (README, Noise probes).")


def stage_gap_notes(texts: Iterable[str]) -> list[str]:
    """``[STAGE_GAP_NOTE]`` where one of the settings ``texts`` shows ``—`` as a BPDA stage's value (:data:`
    NOT_APPLICABLE`, always beside a ``/`` of ``a/b/c``), else ``[]``: the legend of ``table --protocol`` and
    ``evaluate --dry-run`` explains it only where the table holds one."""
    return [STAGE_GAP_NOTE] if any(f"/{NOT_APPLICABLE}" in t or f"{NOT_APPLICABLE}/" in t for t in texts) else []


def noise_settings_text(levels: Sequence[float], draws: int, params: Mapping[str, Any], seed: int | None) -> str:
    """The settings of a noise probe's protocol row: ``levels [0, 0.05, 0.1], draws 1, value 1, seed 42`` (no seed
    where it is not known yet)."""
    text = _items_text({"levels": [float(v) for v in levels], "draws": draws, **params})
    return text if seed is None else f"{text}, seed {seed}"


def noise_rows(record: EvalRecord) -> list[list[Cell]]:
    """A protocol row per noise probe of ``record`` (see the module docstring)."""
    seed = record.provenance.get("seed", record.config.get("seed"))
    return [[Cell(record_name(record)), Cell(name), Cell(p.kind), Cell("noise"),
             Cell(count_text(len(p.levels), "level")), Cell(seed), Cell(None), Cell(round(p.wall_time_s, 2)),
             Cell(noise_settings_text(p.levels, p.draws, p.result.get("params") or {}, p.seed))]
            for p, name in zip(record.noise, probe_names(record.noise))]


def settings_text(settings: Mapping[str, Any] | None, params: Mapping[str, Any] | None = None) -> str:
    """Compact text of an attack's ``settings`` (see the module docstring); without settings (an older record) its
    given ``params``, marked :data:`NOT_RECORDED`. Incomplete settings (``"_complete": false``) say why."""
    if settings is None:
        return f"{_items_text(params or {}) or 'no params given'} ({NOT_RECORDED})"
    return (_items_text(settings) or "no settings") + _incomplete([settings])


def _incomplete(settings: Sequence[Mapping[str, Any]]) -> str:
    """`` (incomplete: why)`` for each distinct reason of the ``settings`` marked ``"_complete": false``."""
    notes = [str(s.get(NOTE_KEY) or "not every default is known") for s in settings if s.get(COMPLETE_KEY) is False]
    return "".join(f" (incomplete: {note})" for note in dict.fromkeys(notes))


def _is_inner(value: Any) -> bool:
    """An inner attack's settings (``{"attack": name, ...}``) or one per stage (a list of them)."""
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(isinstance(v, Mapping) and "attack" in v for v in items)


def _items_text(mapping: Mapping[str, Any], nested: bool = False) -> str:
    """``key value, key value; inner NAME: ...``: the settings' own values, then each inner attack. A list as long
    as a BPDA attack's stages (its ``inner``, one entry per stage) is one value per stage, ``a/b``; any other list,
    and every list inside a value (``nested``), is one value, ``[a, b]``."""
    inner_stages = mapping.get("inner")
    stages = len(inner_stages) if not nested and isinstance(inner_stages, list) and _is_inner(inner_stages) else None
    own, inner = [], []
    for key, value in mapping.items():
        if str(key).startswith("_"):
            continue
        if _is_inner(value):
            inner.append(_inner_text(str(key), value if isinstance(value, list) else [value]))
        else:
            per_stage = isinstance(value, list) and len(value) == stages
            own.append(f"{_key_text(key)} {_value_text(_Stages(value) if per_stage else value)}")
    return "; ".join(part for part in [", ".join(own), *inner] if part)


def _inner_text(key: str, stages: Sequence[Mapping[str, Any]]) -> str:
    """``inner apgd-ce: steps 100/150, rho 0.75``: per setting one value, or one per stage where they differ, the
    attack's name too (``inner apgd-ce/apgd-ce/apgd-t``: a stage's own ``inner``; a setting that stage's attack does
    not have is ``—``, ``loss ce/ce/—``); an inner attack's incomplete settings say so as the attack's own do."""
    names = [str(s["attack"]) for s in stages]
    names = names[:1] if len(set(names)) == 1 else names  # one per stage, as the legend reads a/b/c
    keys = list(dict.fromkeys(k for s in stages for k in s if k != "attack"))
    merged: dict[str, Any] = {}
    for k in keys:
        values = [s.get(k, NOT_APPLICABLE) for s in stages]
        same = all(_same(v, values[0]) for v in values)
        merged[k] = values[0] if same else _Stages(values)
    return f"{_key_text(key)} {'/'.join(names)}: {_items_text(merged) or 'defaults'}{_incomplete(stages)}"


def _same(a: Any, b: Any) -> bool:
    """Two stages' values of a setting read the same (a missing one only as another missing one)."""
    missing = (a is NOT_APPLICABLE, b is NOT_APPLICABLE)
    return missing[0] == missing[1] and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class _Stages(list):
    """One value per BPDA stage, written ``a/b/c``."""


class _NotApplicable(str):
    """A stage whose inner attack has no such setting (APGD-T's ``loss`` beside APGD-CE's), written ``—``."""


#: The value of a setting a stage's inner attack does not have, in ``a/b/c`` (``loss ce/ce/—``): not a setting of
#: ``None`` (written ``none``, e.g. no query cap).
NOT_APPLICABLE = _NotApplicable("—")


def _key_text(key: Any) -> str:
    return str(key).replace("_", " ")


def _value_text(value: Any) -> str:
    """A setting's value: one value per BPDA stage (:class:`_Stages`) as ``a/b``, else as
    :func:`~kwta_robust.numbers.setting_value_text` writes it (a float ``:g``, a list as one value ``[0.02, 0.1]``),
    with a mapping in parentheses, ``true``/``false`` and ``none``."""
    if isinstance(value, _Stages):
        return "/".join(_value_text(v) for v in value)
    return setting_value_text(value, _scalar_text)


def _scalar_text(value: Any) -> str:
    """A setting's value that is neither a float nor a list: ``true``/``false``, ``none``, a mapping in
    parentheses, else its ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return f"({_items_text(value, nested=True) or 'none'})"
    return str(value)


def threats_text(results: Sequence[AttackResult], texts: Mapping[tuple[str, float], str] | None = None) -> str:
    """``Linf 0.1, 0.3; L2 0.5``: the norms and epsilons of ``results`` in order of appearance, each epsilon as
    ``texts`` writes it (the tables' names, :func:`~kwta_robust.report.threat_points`: 0.3 and 0.1 + 0.2, both
    written ``0.3``, were one ``Linf 0.3``, so the row listed one threat point of two), else as its result does."""
    return points_text([(r.norm, (texts or {}).get((r.norm, r.eps), r.eps_text)) for r in results])


def points_text(points: Sequence[tuple[str, str]]) -> str:
    """``Linf 0.1, 0.3; L2 0.5``: threat points ``(norm, eps text)`` by norm, in order of appearance."""
    by_norm: dict[str, list[str]] = {}
    for norm, eps_text in points:
        texts = by_norm.setdefault(norm, [])
        if eps_text not in texts:
            texts.append(eps_text)
    return "; ".join(f"{NORM_TITLES.get(norm, norm)} {', '.join(eps)}" for norm, eps in by_norm.items())


def unit_settings_text(settings: Mapping[str, Any] | None, params: Mapping[str, Any] | None, *,
                       no_layer: bool = False, source: str | None = None) -> str:
    """The settings cell of an attack's protocol row: :func:`settings_text`, after :data:`NO_LAYER` for a BPDA
    attack that acts on no layer (``no_layer``) and after ``source NAME`` for a transfer attack."""
    text = settings_text(settings, params)
    if no_layer:  # BPDA ran its first stage's inner attack alone, unchanged
        text = f"{NO_LAYER}; {text}"
    return text if source is None else f"source {source}; {text}"


def _units(record: EvalRecord) -> dict[tuple, list[AttackResult]]:
    """The record's attack results (then its sanity attack) grouped by what makes a protocol row: label, attack,
    kind, source and settings (or, without them, params), in order of first appearance."""
    groups: dict[tuple, list[AttackResult]] = {}
    for r in [*sorted(record.results, key=lambda r: r.position), *record.sanity]:
        described = json.dumps(r.settings if r.settings is not None else {"params": r.params}, sort_keys=True)
        groups.setdefault((r.label, r.attack, r.kind, r.source, described), []).append(r)
    return groups


def protocol_table(records: Sequence[EvalRecord], title: str = "Attack protocol") -> Table:
    """The protocol of ``records`` (see the module docstring): a row per record and attack label, then per noise
    probe; headers :data:`HEADERS`."""
    if not records:
        raise ConfigError("table --protocol: no records given")
    table_rows = []
    texts = {(norm, eps): text for norm, eps, text in threat_points(records)}
    for record in records:
        seed = record.provenance.get("seed", record.config.get("seed"))
        for (label, attack, kind, source, _), units in _units(record).items():
            counted = [u for u in units if u.queries is not None]
            attacked = sum(u.n_attacked for u in counted)
            per_sample = round(sum(u.queries for u in counted) / attacked, 1) if attacked else None
            text = unit_settings_text(units[0].settings, units[0].params, source=source,
                                      no_layer=any(u.bpda_layers == {} for u in units))
            table_rows.append([Cell(record_name(record)), Cell(label), Cell(attack), Cell(kind),
                               Cell(threats_text(units, texts)), Cell(seed), Cell(per_sample),
                               Cell(round(sum(u.wall_time_s for u in units), 2)), Cell(text)])
        table_rows += noise_rows(record)
    noise = [NOISE_NOTE] if any(record.noise for record in records) else []
    gaps = stage_gap_notes(cell_text(row[-1]) for row in table_rows)
    return Table(list(HEADERS), table_rows, [*NOTES, *gaps, *noise, *partial_notes(records)], title=title,
                 key_columns=2)


def terminal_protocol(table: Table, width: int = WIDTH) -> str:
    """The ``md`` protocol within ``width`` columns, as every ``md`` output is: the table without its settings
    column, then the settings as a wrapped list, one item per label and text with the models it holds for
    (``label (kwta, relu): settings``), then the notes."""
    settings_at = table.headers.index("settings")
    narrow = Table([h for i, h in enumerate(table.headers) if i != settings_at],
                   [[c for i, c in enumerate(row) if i != settings_at] for row in table.rows],
                   key_columns=table.key_columns)
    models: dict[tuple[str, str], list[str]] = {}
    for row in table.rows:
        models.setdefault((cell_text(row[1]), cell_text(row[settings_at])), []).append(cell_text(row[0]))
    listed = [f"{label} ({', '.join(names)}): {text}" for (label, text), names in models.items()]
    return terminal_markdown([narrow], title=table.title, notes=[*listed, *table.notes], width=width)


def render_protocol(records: Sequence[EvalRecord], fmt: str = "md", title: str = "Attack protocol") -> str:
    """:func:`protocol_table` of ``records`` in the table format ``fmt`` (any registered format; ``md``, the
    terminal's, within 120 columns: :func:`terminal_protocol`)."""
    return render_protocol_table(protocol_table(records, title=title), fmt)


def render_protocol_table(table: Table, fmt: str = "md") -> str:
    """A protocol table (headers ``model``, ``label`` first and ``settings`` among them) in the table format ``fmt``
    (``md``: :func:`terminal_protocol`)."""
    return terminal_protocol(table) if fmt == "md" else get_format(fmt).table(table)
