"""Cross-format agreement of the tables a paper takes: seeded random records (:mod:`fuzz48_tables`: several models,
attacks and threat points, noise probes, budget-check and other flags, survivors 0 and n, n = 1) rendered as every
table in every format (Markdown wide and narrow, CSV, LaTeX, JSON, HTML), each read back and compared: the same
headers in the same order, the same cells with the same rounding and intervals, no cell missing in one format, the
same flags, the same notes, and the numbers the record holds (each attack, the worst case per threat point, clean,
noise score). The CLI's ``table`` and ``report`` agree with the library on the same records.
Fixed seeds here; a larger sweep calls :func:`check_seed` on more seeds from a scratch script."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Sequence

import pytest

from fuzz48_tables import (fuzz_records, heatmaps, html_tables, join_split_blocks, latex_notes, latex_paragraphs,
                           latex_tables, md_notes, md_sections, md_tables, md_unescape)
from kwta_robust.cli import main
from kwta_robust.formats import flat_columns, get_format, render_matrices, render_records_as_matrices, render_stdout
from kwta_robust.formats.csv import csv_text
from kwta_robust.formats.latex import _quoted, _signed
from kwta_robust.html import table_html
from kwta_robust.html_report import build_report
from kwta_robust.html_sweep import records_as_sweep
from kwta_robust.matrix import build_matrices, long_table, matrix_table
from kwta_robust.matrix_transfer import suite_view
from kwta_robust.narrow import overview_table, threat_tables
from kwta_robust.numbers import number_text, percent_text, signed_percent_text, table_number
from kwta_robust.paired import paired_table
from kwta_robust.protocol import protocol_table, render_protocol
from kwta_robust.report import (PARTIAL_MARK, PARTIAL_NOTE, Cell, Table, cell_text, compare_table, detail_table,
                                point_text, record_name)
from kwta_robust.results import EvalRecord, save_record
from kwta_robust.visible_text import visible

SEEDS = range(40)  # about 0.2 s a seed on one core


def _pct1(percent: float | None, rounding: str = ROUND_HALF_UP) -> str | None:
    """A percent number as the Markdown/LaTeX/HTML text rounds it (one decimal, halves up; an interval's bounds
    outward, the lower down and the upper up)."""
    if percent is None:
        return None
    return str(Decimal(f"{percent:.10f}").quantize(Decimal("0.1"), rounding=rounding))


def _expected(table: Table) -> tuple[list[str], list[list[str]]]:
    return list(table.headers), [[cell_text(c) for c in row] for row in table.rows]


def _acc_parts(text: str) -> tuple[str | None, str | None, str | None]:
    """``87.5 (82.3–91.2)`` as its three numbers' texts (``—``: none)."""
    if text.startswith("—"):
        return None, None, None
    value, _, rest = text.partition(" (")
    low, _, high = rest.rstrip(")*!").partition("–")  # '!': a flagged matrix cell (kwta_robust.matrix_flags)
    return value.rstrip("*!"), low or None, high or None


def check_formats(table: Table) -> None:
    """``table`` in every format read back: Markdown, LaTeX and HTML show the cells' texts; JSON and CSV the numbers
    those texts round (each accuracy, each interval bound), the same columns and rows, and the notes."""
    headers, rows = _expected(table)
    (md_h, md_r), = md_tables(get_format("wide").table(table))
    assert (md_h, md_r) == (headers, rows)
    (tex_h, tex_r), = latex_tables(get_format("latex").table(table))
    # LaTeX sets a number's hyphen-minus as the minus sign ($-$, read back as U+2212; tests/test_walk52a_*) and an
    # opening straight quote as LaTeX's (tests/test_relu52_latex_quotes.py)
    assert (tex_h, tex_r) == ([_quoted(h) for h in headers], [[_quoted(_signed(c)) for c in row] for row in rows])
    html = table_html(table)
    (page_table,), items = html_tables(html)
    assert page_table == [headers, *rows]
    assert items == [" ".join(n.split()) for n in table.notes]
    assert md_notes(get_format("wide").table(table)) == list(table.notes)
    assert latex_notes(get_format("latex").table(table)) == [_quoted(" ".join(visible(n).splitlines()))
                                                             for n in table.notes]
    data = json.loads(get_format("json").table(table))
    assert data["title"] == table.title and data["notes"] == list(table.notes)
    csv_rows = list(csv.reader(io.StringIO(get_format("csv").table(table))))
    assert len(data["rows"]) == len(table.rows) == len(csv_rows) - 1
    assert csv_rows[0][:len(data["columns"])] == [csv_text(visible(c)) for c in data["columns"]]
    if PARTIAL_NOTE in table.notes:  # what [partial] means, on the rows of a partial record alone
        assert csv_rows[0][-1] == "note" and [r[-1] for r in csv_rows[1:]] == [
            PARTIAL_NOTE if any(cell_text(c).endswith(PARTIAL_MARK) for c in row) else "" for row in table.rows]
    else:
        assert len(csv_rows[0]) == len(data["columns"])
    for row, text_row, json_row, csv_row in zip(table.rows, rows, data["rows"], csv_rows[1:]):
        csv_cells = dict(zip(data["columns"], csv_row))
        assert list(json_row) == data["columns"]
        for cell, header, text in zip(row, headers, text_row):
            _check_cell(cell, header, text, json_row, csv_cells,
                        percent=any(r[headers.index(header)].percent for r in table.rows),
                        interval=any(r[headers.index(header)].ci is not None for r in table.rows))


def _check_cell(cell: Cell, header: str, text: str, json_row: dict, csv_cells: dict, percent: bool,
                interval: bool = False) -> None:
    if interval and not percent:  # a number with an interval (a noise score): value, ci_low, ci_high on its scale
        keys = [header, f"{header} ci_low", f"{header} ci_high"]
        numbers = [json_row[k] for k in keys]
        # to 12 significant digits (csv51: the same quantity has the same digits however it was computed)
        assert numbers == [None if v is None else table_number(v) for v in [cell.value, *(cell.ci or (None, None))]], \
            (header, numbers)
        value = numbers[0] if numbers[0] is None else float(numbers[0])  # a whole count is an integer (sweep52)
        assert cell_text(Cell(value, None if numbers[1] is None else (numbers[1], numbers[2]))) + cell.mark == text
        assert [csv_cells[k] for k in keys] == ["" if v is None else repr(v).removesuffix(".0") for v in numbers]
        return
    if percent:
        base = header.removesuffix(" (%)")  # weight sparsity (%): a header that says % already is not suffixed twice
        keys = [f"{base} (%)", f"{base} ci_low (%)", f"{base} ci_high (%)"]
        numbers = [json_row[k] for k in keys]
        shown = _acc_parts(text) if cell.percent else (None, None, None)
        outward = (ROUND_HALF_UP, ROUND_FLOOR, ROUND_CEILING)  # every % interval rounds outward (outward50)
        assert [_pct1(v, way) for v, way in zip(numbers, outward)] == list(shown), (header, numbers, text)
        for key, value in zip(keys, numbers):
            assert (csv_cells[key] == "") == (value is None), (key, csv_cells[key], value)
            if value is not None:  # the CSV number rounds to the text the other formats show
                assert _pct1(float(csv_cells[key])) == _pct1(value), (key, csv_cells[key], value)
        return
    value = json_row[header]
    if isinstance(cell.value, bool) or not isinstance(cell.value, (int, float)):
        assert value == cell.value, (header, value, cell.value)
        expected_csv = "" if value is None else csv_text(visible(value)) if isinstance(value, str) else str(value)
        assert csv_cells[header].replace("\n", "\r") in (expected_csv, expected_csv.replace("\n", "\r")), header
    elif isinstance(cell.value, float) and not math.isfinite(cell.value):
        assert value is None and csv_cells[header] == ""
    else:
        exact = table_number(cell.value) if cell.computed and isinstance(cell.value, float) else cell.value
        whole = cell.count and float(exact).is_integer()  # a count (a noise score) whole: an integer (sweep52)
        assert value == exact and type(value) is (int if whole else type(cell.value)), (header, value, cell.value)
        assert float(csv_cells[header]) == value, (header, csv_cells[header], value)  # as JSON: every digit


def _flag_codes(record: EvalRecord) -> str:
    codes: list[str] = []
    for f in record.diagnostics:
        code = f.code if f.severity != "info" else f"({f.code})"
        codes += [code] if code not in codes else []
    return ", ".join(codes) or "none"


def _acc(acc) -> str:
    """An accuracy as the tables write it: halves up, its interval rounded outward (never narrower; outward50)."""
    return (f"{percent_text(acc.accuracy)} ({_pct1(100 * acc.ci_low, ROUND_FLOOR)}–"
            f"{_pct1(100 * acc.ci_high, ROUND_CEILING)})")


def point_texts(records: Sequence[EvalRecord]) -> dict[tuple[str, float], str]:
    """Each threat point as every table names it: ``Linf 0.3``; epsilons that records write alike in full."""
    first: dict[tuple[str, float], str] = {}
    for rec in records:
        for unit in [*rec.results, *rec.worst_case]:
            first.setdefault((unit.norm, unit.eps), unit.eps_text)
    shared = Counter((norm, text) for (norm, _), text in first.items())
    return {(norm, eps): point_text(norm, repr(eps) if shared[(norm, text)] > 1 else text)
            for (norm, eps), text in first.items()}


def _attack_column(headers: Sequence[str], name: str, point: str) -> str:
    """The wide table's column of attack ``name`` at ``point``: one labelled ``worst case`` names its place
    (``worst case Linf 0.3 (column 5)``), the worst case keeps its name."""
    base = f"{name} {point}"
    if name != "worst case":
        return base
    found, = [h for h in headers if re.fullmatch(re.escape(base) + r" \(column \d+\)", h)]
    return found


def check_wide(records: Sequence[EvalRecord], table: Table) -> None:
    """The wide table holds each record's numbers: clean, each attack, the worst case per threat point (the minimum
    over its attacks there), the noise score and the flag codes; ``—`` where the record has no such unit."""
    headers, rows = _expected(table)
    texts = point_texts(records)
    assert [r[0] for r in rows] == [record_name(rec) for rec in records]
    assert len(set(headers)) == len(headers)
    for rec, row in zip(records, rows):
        cells = dict(zip(headers, row))
        assert cells["clean"] == _acc(rec.clean) and cells["n"] == str(rec.clean.n)
        assert cells["flags"] == _flag_codes(rec)
        shown = {"model", "activation", "n", "clean", "flags", "noise score", "weight sparsity (%)"} & set(headers)
        if "weight sparsity (%)" in headers:  # a fraction, shown in %
            sparsity = (rec.model.get("weight_sparsity") or {}).get("overall")
            assert cells["weight sparsity (%)"] == ("—" if sparsity is None else percent_text(sparsity))
        for r in rec.results:
            header = _attack_column(headers, f"{'+' if r.cumulative and r.position else ''}{r.label}",
                                    texts[(r.norm, r.eps)])
            assert cells[header] == _acc(r.robust), header
            shown.add(header)
        for w in rec.worst_case:
            header = f"worst case {texts[(w.norm, w.eps)]}"
            assert cells[header] == _acc(w.robust) and shown.isdisjoint({header})
            assert all(w.robust.correct <= r.robust.correct for r in rec.results_at(w.norm, w.eps))
            shown.add(header)
        if "noise score" in headers:
            score = rec.noise_score()
            assert cells["noise score"].partition(" (")[0] == ("—" if score is None else number_text(score))
        assert all(text == "—" for h, text in cells.items() if h not in shown), rec.label
    points = {h.removeprefix("worst case ") for h in headers if h.startswith("worst case ")}
    for note in table.notes:  # the budget check's verified bound names its threat point as the columns do
        if "budget check at " in note:
            assert note.partition("budget check at ")[2].partition(": its re-runs")[0] in points, note


def check_narrow(records: Sequence[EvalRecord], wide: Table) -> None:
    """``table --format md`` (the overview and one table per threat point, split for width) shows the wide table's
    cells; its notes are the wide table's and the paired comparison's."""
    headers, rows = _expected(wide)
    text = render_stdout(records, "md")
    tables = join_split_blocks(md_tables(text))
    overview = tables[0]
    assert overview[0] == [h for h in headers if h in overview[0]] and len(overview[1]) == len(rows)
    for row, shown in zip(rows, overview[1]):
        assert shown == [c for h, c in zip(headers, row) if h in overview[0]]
    cells = {(row[0], h): c for row in rows for h, c in zip(headers, row)}
    names = [record_name(rec) for rec in records]
    seen = {(n, h) for n in names for h in overview[0]}
    for threat, body in tables[1:]:
        if threat[0] == "models":  # the paired comparison
            continue
        assert threat[1:] == names
        for line in body:  # an attack labelled 'worst case' names its row: 'worst case (row 1)'
            renamed = re.fullmatch(r"(.*) \(row \d+\)", line[0])
            header = _attack_column(headers, renamed.group(1), threat[0]) if renamed else f"{line[0]} {threat[0]}"
            for name, value in zip(names, line[1:]):
                assert cells[(name, header)] == value, (name, line[0], threat[0])
                seen.add((name, header))
    assert seen == set(cells)  # no cell of the wide table missing in the narrow one
    paired = paired_table(records) if len(records) > 1 else None
    columns = ("'+' columns (cascade mode): robust accuracy after that attack and every attack left of it at the same "
               "epsilon.")
    rows_note = "'+' rows (cascade mode): robust accuracy after that attack and every attack above it."
    notes = {rows_note if n == columns else n for n in wide.notes} | set(paired.notes if paired else [])
    assert {" ".join(n.split()) for n in notes} == {" ".join(n.split()) for n in _md_list(text)}


def _md_list(text: str) -> list[str]:
    """The wrapped list items of terminal Markdown, each joined to one line."""
    items: list[str] = []
    for line in text.splitlines():
        if line.startswith("- "):
            items.append(line[2:])
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    return [md_unescape(item) for item in items]


def check_report(records: Sequence[EvalRecord], wide: Table) -> None:
    """The HTML report's tables are the Markdown's: overview, per threat point, the wide table and the worst case."""
    tables, _ = html_tables(build_report(records))
    paired = [paired_table(records)] if len(records) > 1 and paired_table(records) else []
    for expected in [overview_table(records), *threat_tables(records), wide, *paired,
                     *(detail_table(rec) for rec in records if rec.results or rec.sanity),
                     *(protocol_table([rec], title="") for rec in records if rec.results or rec.sanity)]:
        headers, rows = _expected(expected)
        assert [headers, *rows] in tables, headers
    texts = point_texts(records)
    worst = next((t for t in tables if t[0][:4] == ["model", "threat", "worst case", "robust / n"]), [[]])
    listed = [(rec.label, texts[(norm, eps)], _acc(w.robust), f"{w.robust.correct}/{w.robust.n}")
              for rec in records for norm, eps in rec.threat_points() for w in [rec.worst(norm, eps)] if w]
    assert [tuple(row[:4]) for row in worst[1:]] == listed
    for rec in records:  # the overview card: clean and the worst case per threat point, as the tables name them
        card = [["clean", _acc(rec.clean)]] + [[f"worst case {texts[(w.norm, w.eps)]}", _acc(w.robust)]
                                               for norm, eps in rec.threat_points() for w in [rec.worst(norm, eps)]
                                               if w]
        assert any(all(row in t for row in card) and t[0][0] == "activation" for t in tables), rec.label


def check_noise_scores(records: Sequence[EvalRecord], wide: Table) -> None:
    """Each record's noise score reads as the wide table's column writes it: in the long table's notes and in the
    HTML report's overview and noise section."""
    headers, rows = _expected(wide)
    if "noise score" not in headers:
        return
    tables, _ = html_tables(build_report(records))
    noise = next(t for t in tables if t[0][:6] == ["model", "probe", "levels", "draws", "samples", "noise score"])
    for rec, row in zip(records, rows):
        shown = dict(zip(headers, row))["noise score"]
        probes = [p for p in rec.noise if p.kind == "numenta"]
        if not probes:
            assert shown == "—"
            continue
        notes = [n for n in detail_table(rec).notes if n.startswith("noise numenta: ")]
        written = notes[0].partition(", noise score ")[2].partition(",")[0]  # 70 (95% interval 59–81)
        assert written.partition(" (")[0] == shown.partition(" (")[0], (notes[0], shown)
        assert written.partition("interval ")[2].rstrip(")") == shown.partition(" (")[2].rstrip(")"), (notes[0], shown)
        assert [r[5] for r in noise[1:] if r[0] == rec.label and r[1].startswith("noise numenta")][0] == shown
        card = next(t for t in tables if t[0][0] == "activation" and [["noise score", shown]] == [
            r for r in t if r[0] == "noise score"] and ["clean", _acc(rec.clean)] in t)
        assert card


def check_paired(records: Sequence[EvalRecord], wide: Table) -> None:
    """The paired comparison names each accuracy as the wide table does (clean, ``worst case`` + threat point), once
    per pair of models."""
    paired = paired_table(records) if len(records) > 1 else None
    names = {"clean"} | {h for h in wide.headers if h.startswith("worst case ")}
    pairs: dict[str, list[str]] = {}
    for row in paired.rows if paired else []:
        pairs.setdefault(cell_text(row[0]), []).append(cell_text(row[1]))
    for compared in pairs.values():
        accuracies = [name for name in compared if name == "clean" or name.startswith("worst case ")]
        assert set(accuracies) <= names and len(set(accuracies)) == len(accuracies), accuracies
    by_name = {record_name(rec): rec for rec in records}
    at = {f"worst case {text}": point for point, text in point_texts(records).items()}
    for row in paired.rows if paired else []:  # the counts and the difference, from the per-sample verdicts
        first, _, second = cell_text(row[0]).partition(" − ")
        name = cell_text(row[1])
        if name not in names:
            continue
        a, b = by_name[first], by_name[second]
        ok_a, ok_b = ([f == 1 for f in rec.clean_flags] if name == "clean" else
                      [f == -1 for f in rec.worst(*at[name]).first_broken_by] for rec in (a, b))
        only_a = sum(x and not y for x, y in zip(ok_a, ok_b))
        only_b = sum(y and not x for x, y in zip(ok_a, ok_b))
        assert [row[2].value, row[5].value, row[6].value] == [a.clean.n, only_a, only_b], (name, first, second)
        assert cell_text(row[3]) == signed_percent_text((only_a - only_b) / a.clean.n)


def check_matrices(records: Sequence[EvalRecord]) -> None:
    """``table --matrix`` in every format: each matrix under its title with the cells of :func:`matrix_table` (md split
    for width, wide, LaTeX); the long form (CSV, JSON) a row per cell whose numbers round to those cells, a warning
    exactly where a cell is marked."""
    matrices = build_matrices(records)
    expected = [(m.title, [_expected(matrix_table(m, with_legend=False))]) for m in matrices]
    for fmt in ("md", "wide"):
        sections = md_sections(render_matrices(matrices, fmt))
        assert [(t, [(h, r) for h, r in tables]) for t, tables in sections[1:]] == expected, fmt
        assert not sections[0][1]  # the legend, no table, before the first matrix
    assert latex_paragraphs(render_matrices(matrices, "latex")) == expected
    by_label = {rec.label: rec for rec in records}
    for m, (_, [(_, table)]) in zip(matrices, expected):  # each cell: its record's number for the matrix's metric
        for (r, s), name in m.labels.items():
            rec, text = by_label[name], table[m.ratios.index(r)][1 + m.sparsities.index(s)].rstrip("*!")
            if m.noise:
                continue
            if m.metric in ("clean", "worst case"):
                # a transfer attack (crafted on another model) is left out of a matrix's worst case (cmp50)
                acc = rec.clean if m.metric == "clean" else getattr(suite_view(rec).worst(m.norm, m.eps), "robust",
                                                                    None)
            else:
                label = m.metric.removesuffix(" (attack)") if m.metric.endswith(" (attack)") else m.metric
                unit = rec.result(label, m.norm, m.eps)
                acc = unit.robust if unit is not None and bool(unit.cumulative and unit.position) == m.cumulative \
                    else None
            assert text == ("—" if acc is None else _acc(acc)), (m.title, name)
    page = build_report([], sweep=records_as_sweep(records, ["/tmp/fuzz48/r.json"]))
    heat = heatmaps(page)
    for m, (title, [(_, table)]) in zip(matrices, expected):  # the heatmaps: the value, ' !' where the text has '!'
        cells = [(text.rstrip("*!").partition(" (")[0] + " !" * text.rstrip("*").endswith("!")
                  + "*" * text.endswith("*"), (f"{percent_text(m.get(r, s).accuracy)}%" if m.get(r, s) else None)
                  if m.noise else f"[{text.partition(' (')[2].rstrip(')*!').replace('–', ', ')}]" if " (" in text
                  else None)
                 for r, row in zip(m.ratios, table) for s, text in zip(m.sparsities, row[1:])]
        if m.noise:  # the score's cell: its score per image and level in % (with its interval where it has one)
            assert [(v, i and i.partition(" [")[0]) for v, i in heat[title]] == cells, title
        else:
            assert heat[title] == cells, title
    data = json.loads(render_matrices(matrices, "json"))
    csv_rows = list(csv.DictReader(io.StringIO(render_matrices(matrices, "csv"))))
    assert len(csv_rows) == len(data["rows"]) == sum(len(m.cells) for m in matrices)
    rows = iter(zip(data["rows"], csv_rows))
    for m, (_, [(headers, table)]) in zip(matrices, expected):
        for r in m.ratios:
            for s in m.sparsities:
                text = table[m.ratios.index(r)][1 + m.sparsities.index(s)]
                if m.get(r, s) is None:
                    assert text.startswith("—")
                    continue
                row, csv_row = next(rows)
                assert (row["metric"], row["norm"], row["eps"], row["kwta_ratio"], row["weight_sparsity"]) == (
                    m.metric, m.norm, m.eps, r, s)
                assert text.endswith("*") == bool(row["warnings"]) == bool(csv_row["warnings"]), text
                assert row["critical_flags"] == " ".join(f.code for f in by_label[row["record"]].diagnostics
                                                         if f.severity == "critical")  # the heatmaps' ' !'
                assert bool(row["critical_flags"]) == bool(m.flags.get((r, s)))
                assert text.rstrip("*").endswith("!") == bool(row.get("flags")) == bool(csv_row.get("flags")), text
                assert row.get("flags", "").startswith(row["critical_flags"])  # critical codes, then upper-bound ones
                value = number_text(row["correct"]) if m.noise else _acc_parts(text)[0]
                assert text.rstrip("*!").partition(" (")[0] == value
                assert _pct1(row["accuracy (%)"]) == _pct1(float(csv_row["accuracy (%)"]))
                if not m.noise:
                    assert _pct1(row["accuracy (%)"]) == value and row["n"] == m.get(r, s).n


def check_long_layouts(records: Sequence[EvalRecord]) -> None:
    """``table --layout long --format md`` (per record a table per threat point) shows :func:`detail_table`'s
    cells; ``table --protocol --format md`` (settings listed below) the protocol table's other cells."""
    for rec in records:
        rows = _expected(detail_table(rec))[1]
        text = render_stdout([rec], "md", detail=True)
        tables = join_split_blocks(md_tables(text))
        shown = {}
        for threat, body in tables[1:]:
            for line in body:  # an attack labelled 'worst case' and the worst case: told apart by their kind
                shown[(threat[0], line[0], line[1])] = line
        for row in rows[1:]:  # the clean row is the overview's
            threat, attack = row[1], row[2]
            sanity = attack.removesuffix(" (sanity)")
            line = shown.pop(("sanity attack", f"{sanity} {threat}", row[3]) if sanity != attack else (
                threat, attack, row[3]))
            assert line[1:] == row[3:], (line, row)
        assert not shown  # no row the long table lacks
    _check_merged(records)
    table = protocol_table(records)
    texts = point_texts(records)
    for rec in records:  # each attack's threats: every point it ran at, named as the columns name it
        for row in (r for r in table.rows if cell_text(r[0]) == record_name(rec) and cell_text(r[3]) != "noise"):
            units = [u for u in [*rec.results, *rec.sanity] if (u.label, u.kind) == (cell_text(row[1]),
                                                                                    cell_text(row[3]))]
            named = {texts.get((u.norm, u.eps), point_text(u.norm, u.eps_text)) for u in units}
            assert sum(len(part.split(", ")) for part in cell_text(row[4]).split("; ")) == len(named), row
    (headers, rows), = join_split_blocks(md_tables(render_protocol(records, "md")), keys=2)
    settings = table.headers.index("settings")
    assert headers == [h for h in table.headers if h != "settings"]
    assert rows == [[cell_text(c) for i, c in enumerate(row) if i != settings] for row in table.rows]


def _check_merged(records: Sequence[EvalRecord]) -> None:
    """``table --layout long`` in CSV and JSON (the records' long tables as one): each row holds its record's numbers
    under their columns, the columns other records alone have (a randomized model's ``expected``) empty; the wide
    JSON's noise columns (session 51) hold the record's numbers on its clean row, its first, and its paired columns
    (``paired clean ...``, ``paired worst case Linf 0.1 ...``) the long layout's ``paired ...`` on the row they
    compare."""
    data = json.loads(render_stdout(records, "json", detail=True))
    csv_rows = list(csv.reader(io.StringIO(render_stdout(records, "csv", detail=True))))
    assert len(csv_rows) - 1 == len(data["rows"]) and all(len(r) == len(csv_rows[0]) for r in csv_rows)
    wide = json.loads(render_stdout(records, "json"))["rows"]
    own = []
    for rec, wide_row in zip(records, wide):
        headers, rows = flat_columns(detail_table(rec))
        mine = [dict(zip(headers, values)) for values in rows]
        mine[0].update({c: v for c, v in wide_row.items()  # the wide table's own noise score column aside
                        if c.startswith("noise ") and not c.startswith("noise score")})
        for i, row in enumerate(mine):  # the first row is the clean one; a worst case row has kind "-"
            name = "clean" if i == 0 else f"worst case {row['threat']}" \
                if (row["attack"], row["kind"]) == ("worst case", "-") else None
            row.update({"paired " + c[len(f"paired {name} "):]: v for c, v in wide_row.items()
                        if name and c.startswith(f"paired {name} ")})
        own += mine
    assert len(own) == len(data["rows"])
    for row, wanted in zip(data["rows"], own):
        assert set(wanted) <= set(row) and row == {c: wanted.get(c) for c in data["columns"]}


def all_tables(records: Sequence[EvalRecord]) -> list[Table]:
    """Every table of ``records``: wide, overview, per threat point, long per record, paired, protocol, matrices."""
    tables = [compare_table(records), overview_table(records), *threat_tables(records),
              *(detail_table(rec) for rec in records), protocol_table(records)]
    paired = paired_table(records) if len(records) > 1 else None
    matrices = [] if any(rec.status != "complete" for rec in records) else build_matrices(records)
    return tables + ([paired] if paired else []) + [matrix_table(m) for m in matrices] + [long_table(matrices)] * bool(
        matrices)


def check_seed(seed: int) -> None:
    records = fuzz_records(seed)
    wide = compare_table(records)
    check_wide(records, wide)
    for table in all_tables(records):
        check_formats(table)
    check_narrow(records, wide)
    check_report(records, wide)
    check_noise_scores(records, wide)
    check_paired(records, wide)
    check_long_layouts(records)
    if all(rec.status == "complete" for rec in records):
        check_matrices(records)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_table_agrees_across_formats(seed: int) -> None:
    check_seed(seed)


@pytest.mark.parametrize("seed", [5, 17, 33])  # partial records, labels to escape, 0.3 beside 0.1 + 0.2
def test_the_cli_renders_what_the_library_does(tmp_path: Path, capsys, seed: int) -> None:
    """``table`` in every format and ``report`` (HTML, Markdown) on saved records: the library's text, the same
    numbers."""
    records = fuzz_records(seed)
    paths = []
    for rec in records:
        paths.append(str(tmp_path / f"r{len(paths)}.json"))
        save_record(rec, paths[-1])
    for fmt in ("md", "wide", "csv", "latex", "json"):
        assert main(["table", *paths, "--format", fmt, "--allow-partial"]) == 0
        assert capsys.readouterr().out == render_stdout(records, fmt), fmt
        assert main(["table", *paths, "--format", fmt, "--protocol", "--allow-partial"]) == 0
        assert capsys.readouterr().out == render_protocol(records, fmt), fmt
        if all(rec.status == "complete" for rec in records):
            assert main(["table", *paths, "--format", fmt, "--matrix"]) == 0
            assert capsys.readouterr().out == render_records_as_matrices(records, fmt), fmt
    assert main(["report", *paths, "--out", str(tmp_path / "r.md")]) == 0
    (md_h, md_r), *_ = md_tables((tmp_path / "r.md").read_text())
    assert [md_h, *md_r] == [list(_expected(compare_table(records))[0]), *_expected(compare_table(records))[1]]
    assert main(["report", *paths, "--out", str(tmp_path / "r.html")]) == 0
    check_report(records, compare_table(records))
    tables, _ = html_tables((tmp_path / "r.html").read_text())
    assert [*_expected(compare_table(records))[:1], *_expected(compare_table(records))[1]] in tables


