"""Tables rendered from evaluation records only (Markdown, CSV, LaTeX, JSON).

Two layouts:

* :func:`compare_table` (*wide*): one row per record — clean accuracy, robust accuracy per attack and epsilon,
  the per-sample worst case per epsilon, the Numenta noise score and the diagnostics flags. Used by ``compare``,
  ``quickstart`` and ``table``.
* :func:`detail_table` (*long*): one row per (threat, attack) of one record, plus the worst case, with wall time,
  queries and projected violations. Used by ``evaluate``.

Accuracies are percentages with the record's 95 % confidence interval (Wilson score, see
:mod:`kwta_robust.results`) and epsilons are written as the field writes them (``8/255``, ``0.3``). In cascade mode
an attack column after the first is *cumulative* (robust after that attack and every earlier one) and its header
starts with ``+``. Markdown and LaTeX list each flag's evidence below the table; CSV and JSON give every accuracy
and interval bound as a number (percent) in its own column.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from kwta_robust.errors import ConfigError
from kwta_robust.results import Accuracy, EvalRecord

FORMATS: tuple[str, ...] = ("md", "csv", "latex", "json")
LAYOUTS: tuple[str, ...] = ("wide", "long")
NORM_TEXT = {"linf": "Linf", "l2": "L2"}


@dataclass
class Cell:
    """A table cell: an accuracy (fraction, with interval), a number or text."""

    value: Any
    ci: tuple[float, float] | None = None
    percent: bool = False

    @classmethod
    def acc(cls, acc: Accuracy | None) -> "Cell":
        if acc is None:
            return cls(None, None, True)
        return cls(acc.accuracy, (acc.ci_low, acc.ci_high), True)


@dataclass
class Table:
    """Headers, rows of cells, and notes (flag evidence, legends) shown below the table."""

    headers: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    title: str = ""


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pct(v: float, digits: int = 1) -> str:
    return f"{100.0 * v:.{digits}f}"


def cell_text(cell: Cell) -> str:
    """Human text: ``87.5 (82.3–91.2)`` for accuracies, ``—`` for missing values."""
    if cell.value is None or (isinstance(cell.value, float) and math.isnan(cell.value)):
        return "—"
    if cell.percent:
        text = _pct(cell.value)
        if cell.ci is not None and all(_finite(c) for c in cell.ci):
            text += f" ({_pct(cell.ci[0])}–{_pct(cell.ci[1])})"
        return text
    if isinstance(cell.value, float):
        return f"{cell.value:.4g}"
    return str(cell.value)


def _point_text(norm: str, eps_text: str) -> str:
    return f"{NORM_TEXT.get(norm, norm)} {eps_text}"


#: Appended to the model name of a record whose evaluation did not finish (``table --allow-partial``).
PARTIAL_MARK = " [partial]"
PARTIAL_NOTE = ("[partial] = unfinished evaluation: attacks or epsilons may be missing and the worst case covers only "
                "the attacks run so far; re-run its command to finish it.")


def record_name(record: EvalRecord) -> str:
    """The record's label, marked :data:`PARTIAL_MARK` unless its evaluation is complete."""
    return record.label + ("" if record.status == "complete" else PARTIAL_MARK)


def partial_notes(records: Sequence[EvalRecord]) -> list[str]:
    """:data:`PARTIAL_NOTE` when any of ``records`` is unfinished."""
    return [PARTIAL_NOTE] if any(r.status != "complete" for r in records) else []


def activation_text(record: EvalRecord) -> str:
    """``relu``, ``kwta 0.1 volume`` (ratio or k, and mode) or the recorded activation name."""
    m = record.model
    act = str(m.get("activation") or "?")
    if act != "kwta":
        return act
    size = f"{m['kwta_ratio']:g}" if m.get("kwta_ratio") is not None else (f"k={m['kwta_k']}" if m.get("kwta_k") else "")
    return " ".join(part for part in ("kwta", size, str(m.get("kwta_mode") or "")) if part)


def weight_sparsity_value(record: EvalRecord) -> float | None:
    ws = record.model.get("weight_sparsity")
    value = ws.get("overall") if isinstance(ws, dict) else ws
    return float(value) if isinstance(value, (int, float)) else None


def flag_codes(record: EvalRecord) -> str:
    """The record's flag codes once each, ``info`` ones in parentheses; ``none`` without flags."""
    codes: list[str] = []
    for f in record.diagnostics:
        code = f.code if f.severity != "info" else f"({f.code})"
        if code not in codes:
            codes.append(code)
    return ", ".join(codes) if codes else "none"


def _flag_notes(record: EvalRecord, prefix: str) -> list[str]:
    return [f"{prefix}{f.severity} {f.code}: {f.message}" for f in record.diagnostics]


def record_notes(records: Sequence[EvalRecord]) -> list[str]:
    """Per record: the transfer attacks' sources and every diagnostics flag with its evidence (prefixed with the
    record's label when there are several)."""
    notes: list[str] = []
    for rec in records:
        sources = sorted({(r.label, r.source) for r in rec.results if r.source is not None})
        if sources:
            crafted = ", ".join(f"{label} = crafted on {source}" for label, source in sources)
            notes.append(f"[{rec.label}] transfer attacks: {crafted}")
        notes += _flag_notes(rec, f"[{rec.label}] " if len(records) > 1 else "")
    return notes


def _layer_text(layer: dict) -> str:
    ev = layer.get("evidence") or {}
    kinds = [f"top-k gate ({layer.get('grouping')}, k={ev.get('k')}/{ev.get('group_size')})" if k == "gate" else k
             for k in layer.get("kinds", [])]
    return f"{layer.get('name')} ({layer.get('module_class')}): {', '.join(kinds) or 'BPDA-capable'}"


def layer_notes(record: EvalRecord) -> list[str]:
    """What the layer probe found, and per BPDA attack the layers it acted on (records before schema 2: none)."""
    notes = []
    if record.detection:
        found = "; ".join(_layer_text(layer) for layer in record.detection.get("layers", []))
        notes.append(f"layer probe ({record.detection.get('n')} inputs, {record.detection.get('probed')} leaf "
                     f"modules): {found or 'no top-k gate, piecewise-constant or randomized layer'}")
    acted: dict[str, dict] = {}
    for r in record.results:
        if r.bpda_layers is not None:
            acted.setdefault(r.label, r.bpda_layers)
    for label, layers in acted.items():
        notes.append(f"{label} acted on: " + (", ".join(f"{n} ({how})" for n, how in layers.items()) or "no layer"))
    return notes


# ---------------------------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------------------------
def compare_table(records: Sequence[EvalRecord], title: str = "") -> Table:
    """Side by side: one row per record (clean, each attack at each eps, worst case per eps, noise score, flags)."""
    if not records:
        raise ConfigError("table: no records given")
    points: list[tuple[str, float, str]] = []
    columns: list[tuple[str, str, float]] = []  # (label, norm, eps)
    cumulative: dict[tuple[str, str, float], bool] = {}
    for rec in records:
        for norm, eps in rec.threat_points():
            at = rec.results_at(norm, eps)
            text = at[0].eps_text if at else (rec.worst(norm, eps).eps_text if rec.worst(norm, eps) else str(eps))
            if (norm, eps) not in [(p[0], p[1]) for p in points]:
                points.append((norm, eps, text))
            for r in at:
                key = (r.label, norm, eps)
                if key not in columns:
                    columns.append(key)
                cumulative[key] = cumulative.get(key, False) or (r.cumulative and r.position > 0)
    columns.sort(key=lambda c: [(p[0], p[1]) for p in points].index((c[1], c[2])))
    eps_text = {(p[0], p[1]): p[2] for p in points}
    has_noise = any(rec.noise_score() is not None for rec in records)
    has_sparsity = any((weight_sparsity_value(rec) or 0.0) > 0 for rec in records)
    headers = ["model", "activation"] + (["weight sparsity"] if has_sparsity else []) + ["n", "clean"]
    headers += [f"{'+' if cumulative[c] else ''}{c[0]} {_point_text(c[1], eps_text[(c[1], c[2])])}" for c in columns]
    headers += [f"worst case {_point_text(p[0], p[2])}" for p in points]
    if has_noise:
        headers.append("noise score")
    headers.append("flags")
    rows = []
    notes: list[str] = []
    for rec in records:
        row = [Cell(record_name(rec)), Cell(activation_text(rec))]
        if has_sparsity:
            row.append(Cell(weight_sparsity_value(rec), None, True))
        row += [Cell(rec.clean.n), Cell.acc(rec.clean)]
        for label, norm, eps in columns:
            r = rec.result(label, norm, eps)
            row.append(Cell.acc(r.robust if r else None))
        for norm, eps, _ in points:
            w = rec.worst(norm, eps)
            row.append(Cell.acc(w.robust if w else None))
        if has_noise:
            row.append(Cell(rec.noise_score()))
        row.append(Cell(flag_codes(rec)))
        rows.append(row)
    notes += record_notes(records)
    if any(cumulative.values()):
        notes.insert(0, "'+' columns (cascade mode): robust accuracy after that attack and every attack left of it "
                        "at the same epsilon.")
    notes.insert(0, f"Robust accuracy in % with 95% {records[0].ci_method} intervals; worst case = per-sample "
                    "minimum over all attacks.")
    return Table(headers, rows, partial_notes(records) + notes, title)


def detail_table(record: EvalRecord) -> Table:
    """One record in long form: a row per (threat, attack), a worst-case row per threat, and the sanity attack."""
    headers = ["model", "threat", "attack", "kind", "robust", "attacked", "broken", "time (s)", "queries", "violations"]
    model = Cell(record_name(record))

    def row(threat: str, attack: str, kind: str, acc: Accuracy, *rest: Any) -> list[Cell]:
        extra = list(rest) + [None] * (5 - len(rest))
        return [model, Cell(threat), Cell(attack), Cell(kind), Cell.acc(acc)] + [Cell(v) for v in extra]

    rows = [row("none", "clean", "-", record.clean, record.clean.n)]
    for norm, eps in record.threat_points():
        at = record.results_at(norm, eps)
        w = record.worst(norm, eps)
        text = _point_text(norm, at[0].eps_text if at else (w.eps_text if w else str(eps)))
        for r in at:
            name = f"+{r.label}" if r.cumulative and r.position > 0 else r.label
            rows.append(row(text, name, r.kind, r.robust, r.n_attacked, r.n_broken, round(r.wall_time_s, 2),
                            r.queries, r.violations))
        if w is not None:
            rows.append(row(text, "worst case", "-", w.robust))
    for r in record.sanity:
        rows.append(row(_point_text(r.norm, r.eps_text), f"{r.label} (sanity)", r.kind, r.robust, r.n_attacked,
                        r.n_broken, round(r.wall_time_s, 2), r.queries, r.violations))
    notes = [f"{record.label}: {record.dataset.get('name')} ({record.dataset.get('split')}), n={record.clean.n}, "
             f"mode={record.mode}; robust accuracy in % with 95% {record.ci_method} intervals."]
    for probe in record.noise:
        score = probe.result.get("noise_score")
        params = probe.result.get("params") or {}
        name = probe.kind + (f" ({', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in params.items())})"
                             if params else "")
        acc = probe.result.get("accuracy")
        per_level = (", accuracy % per level " + " / ".join(f"{100 * a:.1f}" for a in acc)) if acc else ""
        notes.append(f"noise {name}: levels {probe.levels}, {probe.draws} draws" +
                     (f", noise score {score:.6g}" if isinstance(score, (int, float)) else "") + per_level)
    notes += layer_notes(record)
    notes += _flag_notes(record, "")
    if not record.diagnostics:
        notes.append("diagnostics: no flags")
    return Table(headers, rows, partial_notes([record]) + notes, record_name(record))


# ---------------------------------------------------------------------------------------------------------------
# renderers
# ---------------------------------------------------------------------------------------------------------------
def to_markdown(table: Table) -> str:
    lines = [f"### {table.title}", ""] if table.title else []
    lines.append("| " + " | ".join(h.replace("|", "\\|") for h in table.headers) + " |")
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(cell_text(c)) for c in row) + " |")
    if table.notes:
        lines.append("")
        lines += [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    """Cell text that cannot break the Markdown row: pipes escaped, line breaks as spaces."""
    return " ".join(text.splitlines()).replace("|", "\\|")


def _flat_columns(table: Table) -> tuple[list[str], list[list[Any]]]:
    """Machine-readable columns: an accuracy column becomes value, ci_low, ci_high (numbers, percent)."""
    is_pct = [any(r[i].percent for r in table.rows) for i in range(len(table.headers))]
    headers: list[str] = []
    for h, pct in zip(table.headers, is_pct):
        headers += [f"{h} (%)", f"{h} ci_low (%)", f"{h} ci_high (%)"] if pct else [h]
    rows = []
    for row in table.rows:
        out: list[Any] = []
        for cell, pct in zip(row, is_pct):
            if pct:
                vals = [cell.value, *(cell.ci or (None, None))]
                out += [100.0 * v if _finite(v) else None for v in vals]
            else:
                out.append(cell.value if not (isinstance(cell.value, float) and math.isnan(cell.value)) else None)
        rows.append(out)
    return headers, rows


def to_csv(table: Table) -> str:
    headers, rows = _flat_columns(table)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


def to_json(table: Table) -> str:
    headers, rows = _flat_columns(table)
    data = {"title": table.title, "columns": headers, "rows": [dict(zip(headers, r)) for r in rows], "notes": table.notes}
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text).replace("–", "--").replace("—", "---")


def _latex_cell(cell: Cell) -> str:
    if cell.percent and _finite(cell.value):
        text = _pct(cell.value)
        if cell.ci is not None and all(_finite(c) for c in cell.ci):
            text += rf"\,{{\scriptsize[{_pct(cell.ci[0])}, {_pct(cell.ci[1])}]}}"
        return text
    return latex_escape(cell_text(cell))


def to_latex(table: Table) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), notes as a comment-free list below."""
    spec = "l" + "r" * (len(table.headers) - 2) + "l" if len(table.headers) > 2 else "l" * len(table.headers)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in table.headers) + r" \\", r"\midrule"]
    for row in table.rows:
        lines.append(" & ".join(_latex_cell(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\begin{itemize}")
        lines += [rf"\item {latex_escape(n)}" for n in table.notes]
        lines.append(r"\end{itemize}")
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[Table], str]] = {"md": to_markdown, "csv": to_csv, "latex": to_latex, "json": to_json}


def render(table: Table, fmt: str) -> str:
    if fmt not in RENDERERS:
        raise ConfigError(f"--format: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return RENDERERS[fmt](table)


def render_records(records: Sequence[EvalRecord], fmt: str = "md", layout: str = "wide") -> str:
    """Render records: ``wide`` (side by side) or ``long`` (one detail table per record)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"--layout: unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if layout == "wide":
        return render(compare_table(records), fmt)
    if not records:
        raise ConfigError("table: no records given")
    tables = [detail_table(r) for r in records]
    if fmt in ("csv", "json"):  # machine-readable: one table, the model column tells records apart
        merged = Table(tables[0].headers, [row for t in tables for row in t.rows], [n for t in tables for n in t.notes])
        return render(merged, fmt)
    return "\n".join(render(t, fmt) for t in tables)
