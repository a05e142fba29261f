"""Report sections rendered from evaluation records (never recomputing an attack result).

* overview — per model: activation, data, clean accuracy, the per-sample worst case per threat point, the noise
  score and a badge per diagnostics flag code (coloured by severity);
* comparison table — the narrow tables of :mod:`kwta_robust.narrow` (models; per threat point attacks × models;
  95 % intervals, flags, notes) and the wide :func:`kwta_robust.report.compare_table` folded;
* robust accuracy vs epsilon — per model (a line per attack, the worst case in black; eps 0 = clean accuracy) and
  per attack (a line per model), 95 % Wilson intervals as bands;
* cascade — per model and threat point, how many samples each attack broke that the earlier attacks of the list
  left (``WorstCase.first_broken_by``, so the counts add up to ``n``), as stacked bars and a table;
* worst case — per model and threat point, with the strongest attack and the ids of the samples still robust;
* paired comparison — the first model against each other one on the same samples (:mod:`kwta_robust.paired`);
* noise — accuracy vs noise level per probe and model, and the noise scores (Ahmad & Scheinkman 2019;
  :mod:`kwta_robust.html_noise`);
* diagnostics — every flag with its message and evidence (Carlini et al. 2019), and the model probes;
* attacks — per attack and eps: attacked, broken, wall time, queries, projected violations, and parameters;
* provenance — status, model, data, seeds, config hash, command, versions, the config itself;
* any other record field (e.g. a ``detection`` section) rendered generically.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from typing import Any, Sequence

from kwta_robust.html import Markup, Section, badge, el, simple_table, table_html, value_html
from kwta_robust.html_noise import noise_section
from kwta_robust.layer_text import module_text
from kwta_robust.noise_ci import record_score_interval
from kwta_robust.numbers import number_text
from kwta_robust.narrow import narrow_notes, overview_table, threat_tables
from kwta_robust.paired import paired_table
from kwta_robust.protocol import protocol_table
from kwta_robust.report import (NORM_TEXT, Cell, activation_text, cell_text, compare_table, detail_table,
                                is_cumulative, point_text, point_texts)
from kwta_robust.record_index import RecordIndex, attack_labels_of, indexed
from kwta_robust.results import Accuracy, AttackResult, EvalRecord
from kwta_robust.training_text import training_recipe, training_text
from kwta_robust.svg import (CLEAN_WRONG_COLOUR, DASHES, ROBUST_COLOUR, WORST_COLOUR, Axis, Point, Segment, Series,
                             colour, line_chart, stacked_bars)

#: Record fields with a section of their own; any other (non-empty) field gets a generic section.
RENDERED_FIELDS = frozenset({
    "schema_version", "status", "model", "dataset", "clean", "clean_flags", "clean_margins", "clean_error_rates",
    "config", "config_hash", "mode", "results", "sanity", "worst_case", "noise", "probes", "diagnostics",
    "provenance", "ci_method", "ci_level",
})
WORST = "worst case"
NEVER_BROKEN, CLEAN_WRONG = -1, -2


def acc_text(acc: Accuracy | None) -> str:
    """An accuracy with its interval as the tables write it (``—`` for ``None``)."""
    return cell_text(Cell.acc(acc))


def _eps_text(record: EvalRecord | RecordIndex, norm: str, eps: float) -> str:
    at = record.results_at(norm, eps)
    w = record.worst(norm, eps)
    return at[0].eps_text if at else (w.eps_text if w else f"{eps:g}")


def _unique(items: Sequence[str]) -> list[str]:
    """``items`` in order, each once."""
    return list(dict.fromkeys(items))


def _norms(records: Sequence[EvalRecord]) -> list[str]:
    return _unique([n for rec in records for n, _ in rec.threat_points()])


def attack_labels(records: Sequence[EvalRecord]) -> list[str]:
    """Attack labels in suite order over all records (the colour of each attack in every chart)."""
    return attack_labels_of(records)


def _status_badge(record: EvalRecord) -> Markup:
    if record.status == "complete":
        return badge("complete", "ok")
    return badge(f"{record.status}: numbers are not final", "partial")


def _flag_badges(record: EvalRecord) -> Markup:
    if not record.diagnostics:
        return badge("no flags", "ok")
    seen: list[str] = []
    out = []
    for f in record.diagnostics:  # the severity in words too (as the diagnostics section): colour is not the only cue
        if f.code not in seen:
            seen.append(f.code)
            kind = f.severity if f.severity in ("critical", "warning") else "info"
            out.append(badge(f"{kind}: {f.code}", kind))
    return Markup("".join(out))


def _tip(label: str, norm: str, eps_text: str, acc: Accuracy) -> str:
    return f"{label} at {point_text(norm, eps_text)}: {acc_text(acc)}, {acc.correct}/{acc.n}"


# ---------------------------------------------------------------------------------------------------------------
def overview_section(records: Sequence[EvalRecord], notes: Sequence[str] = ()) -> Section:
    """The report's overview: ``notes`` (the headline the Markdown table's notes begin with, e.g. the quickstart's
    plain attack vs worst case per model and its verdict), then one card per record (model, data, clean and
    worst-case accuracy, a badge per flag)."""
    cards = []
    texts = point_texts(records)
    for rec, ix in zip(records, indexed(records)):
        trained = [("training", training_text(rec))] if training_recipe(rec) else []
        rows = [("activation", activation_text(rec)), *trained,
                ("data", f"{rec.dataset.get('name')} ({rec.dataset.get('split')}), n={rec.clean.n}, {rec.mode}"),
                ("clean", acc_text(rec.clean))]
        for norm, eps in rec.threat_points():
            w = ix.worst(norm, eps)
            if w is not None:
                rows.append((f"worst case {texts[(norm, eps)]}", acc_text(w.robust)))
        score = rec.noise_score()
        if score is not None:  # with its 95% interval where the record holds per-sample counts (noise_ci)
            rows.append(("noise score", cell_text(Cell(score, record_score_interval(rec)))))
        table = el("table", el("tbody", [el("tr", el("th", k), el("td", v)) for k, v in rows]), class_="kv")
        cards.append(el("div", el("h3", rec.label), _status_badge(rec), table, el("div", _flag_badges(rec)),
                        class_="card"))
    critical = any(f.severity == "critical" for rec in records for f in rec.diagnostics)
    what_to_do = [" A critical flag means the numbers of the attacks it names are not to be trusted (e.g. gradient "
                  "masking): report the worst case; each flag's evidence and what to change are under ",
                  el("a", "Diagnostics", href="#diagnostics"), "."] if critical else []
    intro = el("p", "Robust accuracy in % with its 95% interval (Wilson score); the worst case is the per-sample "
                    "minimum over every attack of the suite — the number to report.", what_to_do)
    headline = el("ul", [el("li", n) for n in notes], class_="headline") if notes else Markup("")
    return Section("overview", "Overview", Markup(intro + headline + el("div", cards, class_="cards")))


def table_section(records: Sequence[EvalRecord]) -> Section:
    """The narrow tables (models; per threat point attacks × models), their notes, and the wide table folded."""
    tables = [el("div", table_html(t), class_="tcell") for t in threat_tables(records)]
    body = [table_html(overview_table(records)), el("div", tables, class_="tables"),
            el("ul", [el("li", n) for n in narrow_notes(records)], class_="notes"),
            el("details", el("summary", "wide table (one row per model, as in compare.md)"),
               table_html(compare_table(records)))]
    return Section("table", "Comparison table", Markup("".join(body)))


def _accuracy_series(name: str, clean: Accuracy, points: Sequence[tuple[float, str, str, Accuracy]], col: str,
                     dash: str = "", width: float = 1.8, band: bool = True) -> Series:
    """``points``: ``(eps, eps_text, norm, accuracy)``; the clean accuracy is the eps-0 point."""
    def point(x: float, a: Accuracy, tip: str) -> Point:
        return Point(x, a.accuracy, a.ci_low if band else None, a.ci_high if band else None, tip)

    pts = [point(0.0, clean, f"{name}: clean {acc_text(clean)}")]
    pts += [point(eps, a, _tip(name, norm, text, a)) for eps, text, norm, a in points]
    return Series(name, pts, col, dash, width)


def _eps_axis(records: Sequence[EvalRecord], norm: str) -> Axis:
    ticks = {0.0: "0"}
    for rec in indexed(records):
        for n, eps in rec.threat_points():
            if n == norm:
                ticks[eps] = _eps_text(rec, n, eps)
    return Axis(f"epsilon ({NORM_TEXT.get(norm, norm)}); 0 = clean accuracy", sorted(ticks.items()))


def _worst_points(rec: EvalRecord, norm: str) -> list[tuple[float, str, str, Accuracy]]:
    return [(w.eps, w.eps_text, norm, w.robust) for w in rec.worst_case if w.norm == norm]


def _by_label(rec: EvalRecord) -> dict[str, list[AttackResult]]:
    """``rec``'s results per label, in the record's order (grouped once: a chart per label scanned them all)."""
    groups: dict[str, list[AttackResult]] = {}
    for r in rec.results:
        groups.setdefault(r.label, []).append(r)
    return groups


def _model_chart(rec: EvalRecord, norm: str, colours: dict[str, str], axis: Axis,
                 groups: dict[str, list[AttackResult]] | None = None) -> str | None:
    """One model: the worst case first (thick, with its band), every attack on top of it (thin, no band), each in
    its colour and dash pattern (by its place in ``colours``, as the per-model charts tell models apart: colour is
    not the only cue); ``groups``: its results per label (:func:`_by_label`, built here if not given)."""
    groups = _by_label(rec) if groups is None else groups
    series = []
    worst = _worst_points(rec, norm)
    if worst:
        series.append(_accuracy_series(WORST, rec.clean, worst, WORST_COLOUR, width=4.0))
    order = list(colours)
    for label in attack_labels([rec]):
        results = [r for r in groups.get(label, []) if r.label == label and r.norm == norm]
        if results:
            cumulative = any(is_cumulative(r) for r in results)
            dash = DASHES[order.index(label) % len(DASHES)]
            series.append(_accuracy_series(("+" if cumulative else "") + label, rec.clean,
                                           [(r.eps, r.eps_text, norm, r.robust) for r in results], colours[label],
                                           dash, band=False))
    if not series:
        return None
    return line_chart(series, title=f"{rec.label}: robust accuracy vs eps ({norm})", x_axis=axis)


def _per_model_chart(records: Sequence[EvalRecord], label: str, norm: str, axis: Axis,
                     groups: Sequence[dict[str, list[AttackResult]]] | None = None) -> str | None:
    """One attack (or the worst case), a line per model; ``groups``: each record's results per label (built here
    if not given)."""
    groups = [_by_label(rec) for rec in records] if groups is None else groups
    series = []
    for i, rec in enumerate(records):
        pts = _worst_points(rec, norm) if label == WORST else \
            [(r.eps, r.eps_text, norm, r.robust) for r in groups[i].get(label, [])
             if r.label == label and r.norm == norm]
        if pts:
            series.append(_accuracy_series(rec.label, rec.clean, pts, colour(i), DASHES[i % len(DASHES)]))
    if not series:
        return None
    return line_chart(series, title=f"{label}: robust accuracy vs eps ({norm}), per model", x_axis=axis)


def curves_section(records: Sequence[EvalRecord], colours: dict[str, str]) -> Section | None:
    """Robust accuracy against eps, one chart per norm (``None`` without attack results)."""
    charts: list[str | None] = []
    groups = [_by_label(rec) for rec in records]
    for norm in _norms(records):
        axis = _eps_axis(records, norm)
        if len(records) > 1:
            charts.append(_per_model_chart(records, WORST, norm, axis, groups))
        charts += [_model_chart(rec, norm, colours, axis, found) for rec, found in zip(records, groups)]
        if len(records) > 1:
            charts += [_per_model_chart(records, label, norm, axis, groups) for label in attack_labels(records)]
    figures = [el("figure", Markup(c)) for c in charts if c is not None]
    if not figures:
        return None
    intro = el("p", "Robust accuracy after each attack ('+': cascade mode, cumulative — after that attack and every "
                    "earlier one); the thick black line is the per-sample worst case, bands are 95% intervals; eps 0 "
                    "is the clean accuracy. Hover a point for its numbers.")
    return Section("curves", "Robust accuracy vs epsilon", Markup(intro + el("div", figures, class_="charts")))


def cascade_counts(record: EvalRecord | RecordIndex, norm: str,
                   eps: float) -> tuple[list[str], list[int], int, int] | None:
    """``(attacks, broken by each, misclassified clean, never broken)`` at one threat point, from the record's
    ``first_broken_by``: each sample is counted once, for the first attack of the list that broke it."""
    w = record.worst(norm, eps)
    if w is None:
        return None
    broken = [sum(1 for b in w.first_broken_by if b == i) for i in range(len(w.attacks))]
    clean_wrong = sum(1 for b in w.first_broken_by if b == CLEAN_WRONG)
    robust = sum(1 for b in w.first_broken_by if b == NEVER_BROKEN)
    return list(w.attacks), broken, clean_wrong, robust


def cascade_section(records: Sequence[EvalRecord], colours: dict[str, str]) -> Section | None:
    """The cascade: each sample counted once by the attack that broke it first (``None`` if none)."""
    parts = [el("p", "Each sample counted once: misclassified without attack, broken first by the attack named (in "
                     "suite order: the samples it broke that every earlier attack left robust), or robust under all. "
                     "The counts add up to n.")]
    any_chart = False
    texts = point_texts(records)
    for rec, ix in zip(records, indexed(records)):
        bars, rows, labels = [], [], []
        known: set[str] = set()  # labels as a set (a list's ``in`` was quadratic)
        for norm, eps in rec.threat_points():
            counts = cascade_counts(ix, norm, eps)
            if counts is None:
                continue
            attacks, broken, clean_wrong, robust = counts
            text = texts[(norm, eps)]
            segs = [Segment("misclassified clean", clean_wrong, CLEAN_WRONG_COLOUR)]
            segs += [Segment(f"broken by {a}", b, colours.get(a, colour(i)))
                     for i, (a, b) in enumerate(zip(attacks, broken))]
            segs.append(Segment("robust (worst case)", robust, ROBUST_COLOUR))
            bars.append((text, segs))
            new = [a for a in attacks if a not in known]
            labels += new
            known.update(new)
            rows.append((text, clean_wrong, dict(zip(attacks, broken)), robust, clean_wrong + sum(broken) + robust))
        if not bars:
            continue
        any_chart = True
        legend = [Segment("misclassified clean", 0, CLEAN_WRONG_COLOUR)]
        legend += [Segment(f"broken by {a}", 0, colours.get(a, colour(i))) for i, a in enumerate(labels)]
        legend.append(Segment("robust (worst case)", 0, ROBUST_COLOUR))
        chart = stacked_bars(bars, title=f"{rec.label}: samples broken by each attack", legend=legend)
        headers = ["threat", "misclassified clean", *(f"broken by {a}" for a in labels), "robust", "n"]
        table_rows = [[t, cw, *(by.get(a) for a in labels), rb, n] for t, cw, by, rb, n in rows]
        parts.append(el("h3", rec.label))
        parts.append(el("div", el("figure", Markup(chart)), class_="charts"))
        parts.append(simple_table(headers, table_rows, numeric=range(1, len(headers))))
    return Section("cascade", "Cascade", Markup("".join(parts))) if any_chart else None


def evidence_for_display(value: Any) -> Any:
    """A flag's evidence with every float as the tables write it (4 significant digits, :func:`number_text`:
    ``0.5417``, not ``0.541667`` or ``0.5416666666666666``); the record keeps the numbers. Integers (counts, sample
    ids), texts and booleans as they are."""
    if isinstance(value, float) and math.isfinite(value):  # NaN: value_html's '—'
        return number_text(value)
    if isinstance(value, dict):
        return {k: evidence_for_display(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [evidence_for_display(v) for v in value]
    return value


def worst_case_section(records: Sequence[EvalRecord]) -> Section | None:
    """The worst case over the suite at each threat point, against its first attack alone (``None`` if none)."""
    rows = []
    texts = point_texts(records)
    for rec, ix in zip(records, indexed(records)):
        indices = rec.dataset.get("indices")
        for norm, eps in rec.threat_points():
            w = ix.worst(norm, eps)
            counts = cascade_counts(ix, norm, eps)
            if w is None or counts is None:
                continue
            attacks, broken, _, _ = counts
            first = ix.results_at(norm, eps)
            if rec.mode == "independent":  # every attack ran on every sample: its own count, not first-broken credit
                n_broken: dict[str, int] = {}  # the first result of each label, as a scan per attack found it
                for r in first:
                    n_broken.setdefault(r.label, r.n_broken)
                broken = [n_broken.get(a, 0) for a in attacks]
            strongest = attacks[broken.index(max(broken))] if any(broken) else "—"  # the first on a tie
            robust_pos = [i for i, b in enumerate(w.first_broken_by) if b == NEVER_BROKEN]
            ids = [indices[i] for i in robust_pos] if isinstance(indices, list) and len(indices) == len(
                w.first_broken_by) else robust_pos
            rows.append([rec.label, texts[(norm, eps)], Markup(el("b", acc_text(w.robust))),
                         f"{w.robust.correct}/{w.robust.n}", acc_text(first[0].robust) if first else None,
                         f"{first[0].label}" if first else None, strongest, ids])
    if not rows:
        return None
    headers = ["model", "threat", "worst case", "robust / n", "first attack alone", "first attack",
               "broke the most samples", "robust sample ids (data set indices)"]
    note = el("p", "The worst case counts a sample as robust only if no attack of the suite broke it. The first attack "
                   "of the suite is its own number; the gap to the worst case is what the later (e.g. adaptive) "
                   "attacks add.")
    return Section("worst", "Worst case", Markup(note + simple_table(headers, rows, numeric=(2, 3, 4))))


def diagnostics_section(records: Sequence[EvalRecord]) -> Section:
    """The masking checks' flags of every record."""
    parts = [el("p", "Masking checks (Carlini et al. 2019; Athalye et al. 2018): each flag names its evidence. A "
                     "critical flag means the numbers of the attacks it names are not to be trusted; use the worst "
                     "case.")]
    for rec in records:
        parts.append(el("h3", rec.label))
        if not rec.diagnostics:
            parts.append(el("p", badge("no flags", "ok"), "none of the checks fired."))
        for f in rec.diagnostics:
            kind = f.severity if f.severity in ("critical", "warning") else "info"
            parts.append(el("div", el("div", badge(f.severity, kind), el("b", f.code)), el("p", f.message),
                            value_html(evidence_for_display(f.evidence)) if f.evidence else None,
                            class_=f"flag {kind}"))
        if rec.probes:
            parts.append(el("details", el("summary", "model probes (evidence for the gradient, randomness and "
                                                     "probability checks)"), value_html(rec.probes)))
    return Section("diagnostics", "Diagnostics", Markup("".join(parts)))


def attacks_section(records: Sequence[EvalRecord]) -> Section | None:
    """Every attack's result with, under "attack parameters", its protocol (:func:`kwta_robust.protocol.
    protocol_table`: threat points, effective settings, seed, queries per sample) and the params the config gave
    (``None`` without attack results)."""
    if not any(rec.results or rec.sanity for rec in records):
        return None
    parts = []
    for rec in records:
        parts.append(el("h3", rec.label))
        parts.append(table_html(detail_table(rec)))
        params: dict[str, list] = {}
        for r in sorted(list(rec.results) + list(rec.sanity), key=lambda r: r.position):
            params.setdefault(r.label, [r.label, r.attack, r.kind, r.source, r.params])
        parts.append(el("details", el("summary", "attack parameters"), table_html(protocol_table([rec], title="")),
                        el("p", "As the config gave them (params):"),
                        simple_table(["label", "attack", "kind", "source", "params"], list(params.values()))))
    return Section("attacks", "Attacks", Markup("".join(parts)))


def extra_sections(records: Sequence[EvalRecord]) -> list[Section]:
    """A section per record field this module has no dedicated view for (e.g. ``detection``), shown generically."""
    names: list[str] = []
    for rec in records:
        for f in dataclasses.fields(rec):
            if f.name not in RENDERED_FIELDS and f.name not in names and \
                    getattr(rec, f.name, None) not in (None, {}, []):
                names.append(f.name)
    sections = []
    for name in names:
        parts = []
        for rec in records:
            value = getattr(rec, name, None)
            if value in (None, {}, []):
                continue
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = dataclasses.asdict(value)
            elif isinstance(value, list):
                value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
                         for v in value]
            if name == "detection" and isinstance(value, dict):
                value = detection_view(value)
            parts.append(el("h3", rec.label) + value_html(value))
        sections.append(Section(f"extra-{name}", name.replace("_", " ").capitalize(), Markup("".join(parts))))
    return sections


def detection_view(detection: dict) -> dict:
    """The layer probe's section (``record.detection``) as the HTML report shows it: each selection's ``modules``
    (outermost first, the model itself ``""``) named as the Markdown notes name them
    (:func:`~kwta_robust.layer_text.module_text`: ``(model), 1``, not ``, 1``); the record is left as it was."""
    selections = detection.get("selections")
    if not isinstance(selections, list):
        return detection
    shown = [dict(s, modules=[module_text(str(m)) for m in s["modules"]])
             if isinstance(s, dict) and isinstance(s.get("modules"), list) else s for s in selections]
    return dict(detection, selections=shown)


def provenance_section(records: Sequence[EvalRecord]) -> Section:
    """What produced each record: command, versions, machine, config."""
    parts = []
    for rec in records:
        prov = dict(rec.provenance)
        command = prov.pop("command", None)
        versions = prov.pop("versions", None)
        model = rec.model
        ds = rec.dataset
        rows = {
            "status": _status_badge(rec),
            "architecture": model.get("architecture"), "activation": activation_text(rec),
            "checkpoint sha256": model.get("checkpoint_sha256"), "source": model.get("source"),
            "data": f"{ds.get('name')} ({ds.get('split')}), n={ds.get('n', rec.clean.n)}"
                    + ("" if ds.get("sample_seed") is None else f", sample seed {ds['sample_seed']}")  # not 'None'
                    + (f", read from {prov.pop('data_root')}" if prov.get("data_root") else ""),  # data_root: null too
            "mode": rec.mode, "seed": prov.pop("seed", rec.config.get("seed")), "config hash": rec.config_hash,
            "interval": f"{100 * rec.ci_level:g}% {rec.ci_method}",
            "command": shlex.join(str(c) for c in command) if isinstance(command, list) else command,
            "versions": versions,
        }
        rows.update(prov)
        parts.append(el("h3", rec.label))
        parts.append(value_html(rows))
        parts.append(el("details", el("summary", "evaluation config"), value_html(rec.config)))
        parts.append(el("details", el("summary", "model description"), value_html(model)))
    return Section("provenance", "Provenance", Markup("".join(parts)))


def paired_section(records: Sequence[EvalRecord]) -> Section | None:
    """The first model against each other one on the same samples (:mod:`kwta_robust.paired`)."""
    paired = paired_table(records) if len(records) > 1 else None
    return None if paired is None else Section("paired", "Paired comparison", table_html(paired))


def record_sections(records: Sequence[EvalRecord], notes: Sequence[str] = ()) -> list[Section]:
    """Every section for ``records``, in reading order (sections with nothing to show are left out); ``notes``: the
    headline lines the overview begins with (:func:`overview_section`)."""
    colours = {label: colour(i) for i, label in enumerate(attack_labels(records))}
    sections = [overview_section(records, notes), table_section(records), curves_section(records, colours),
                cascade_section(records, colours), worst_case_section(records), paired_section(records),
                noise_section(records),
                diagnostics_section(records), *extra_sections(records), attacks_section(records),
                provenance_section(records)]
    return [s for s in sections if s is not None]
