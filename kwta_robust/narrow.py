"""Narrow layouts of the record tables, for a terminal (and the HTML report): attacks as rows, one table per
threat point, so a table stays readable however many attacks and epsilons a suite has.

* :func:`overview_table` — one row per record: activation, n, clean accuracy, noise score, flag codes;
* :func:`threat_tables` — per threat point (norm, eps): a row per attack (suite order, ``+`` = cumulative in
  cascade mode) and the worst case, a column per record;
* :func:`detail_tables` — one record per threat point: robust accuracy, attacked, broken, time, queries,
  violations per attack (what ``evaluate`` prints);
* :func:`terminal_markdown` — aligned Markdown of such tables, every line at most ``width`` characters: a table
  too wide is split into several that repeat the columns naming a row (its first, or its ``key_columns``), a cell
  longer than ``(width - 7) // 2`` characters (56 at 120: two columns always fit) is shortened with ``…`` (the full
  text stays in the files and in ``--format wide``) except in a table's ``wrap_columns`` (the overview's flag codes),
  whose list goes on in the lines below, every item shown; notes are wrapped; text from records is escaped where
  Markdown would format it (:mod:`kwta_robust.md_text`).

* :func:`narrow_markdown` — all of it for some records: the ``md`` format (:mod:`kwta_robust.formats.md`).

The wide layouts (:func:`kwta_robust.report.compare_table`, :func:`~kwta_robust.report.detail_table`) stay the
files' layout and ``--format wide``.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import replace
from typing import Sequence

from attacks.base import threat_text
from kwta_robust.comparability import comparability_notes
from kwta_robust.errors import ConfigError
from kwta_robust.layer_text import acted_on_notes
from kwta_robust.md_text import md_cell, md_escape
from kwta_robust.report import (Cell, Table, cell_text, detail_table, evidence_notes, expected_cells,
                                expected_column, flag_codes, is_cumulative, model_columns, noise_score_notes,
                                other_noise_notes, partial_notes, record_name, result_of, suite_order,
                                threat_points)
from kwta_robust.noise_ci import record_score_interval
from kwta_robust.paired import paired_table
from kwta_robust.record_index import RecordIndex, indexed
from kwta_robust.results import EvalRecord

#: Terminal width every printed line fits in.
WIDTH = 120
WORST = "worst case"


def overview_table(records: Sequence[EvalRecord], title: str = "") -> Table:
    """One row per record: model, activation, [training: when some model was adversarially trained], [weight
    sparsity], n, clean, [noise score, with its 95% interval where the record holds per-sample counts], flags."""
    if not records:
        raise ConfigError("table: no records given")
    has_noise = any(rec.noise_score() is not None for rec in records)
    headers, model_cells = model_columns(records)
    headers += (["noise score"] if has_noise else []) + ["flags"]
    rows = []
    for rec in records:
        row = model_cells(rec)
        if has_noise:
            row.append(Cell(rec.noise_score(), record_score_interval(rec), count=True))
        rows.append(row + [Cell(flag_codes(rec))])
    return Table(headers, rows, (noise_score_notes(records) if has_noise else []) + other_noise_notes(records),
                 title, wrap_columns=(len(headers) - 1,))  # every flag code shown, however many


def row_names(names: Sequence[str]) -> list[str]:
    """The attack rows of a threat table named once each: a name the worst case's row or an earlier row has (an
    attack labelled ``worst case``; one labelled ``+pgd`` beside the cascade's cumulative ``pgd``) names its row
    number (``worst case (row 1)``), as the wide table's columns name theirs
    (:func:`~kwta_robust.report.attack_headers`). Two rows ``worst case`` left the reader to guess which one is the
    per-sample minimum."""
    out: list[str] = []
    taken = {WORST}
    for i, name in enumerate(names):
        out.append(f"{name} (row {i + 1})" if name in taken else name)
        taken.add(out[-1])
    return out


def threat_tables(records: Sequence[EvalRecord]) -> list[Table]:
    """Per threat point: a row per attack label (suite order over all records) and the worst case, a column per
    record; ``—`` where a record has no such attack."""
    tables = []
    indexes = indexed(records)  # each record's results looked up once per render, not scanned per cell
    for norm, eps, text in threat_points(records):
        labels = suite_order([[(r.label, is_cumulative(r)) for r in ix.results_at(norm, eps)] for ix in indexes])
        rows = []
        names = row_names([("+" if cumulative else "") + label for label, cumulative in labels])
        for name, (label, cumulative) in zip(names, labels):
            results = [result_of(ix, label, norm, eps, cumulative) for ix in indexes]
            rows.append([Cell(name)] + [Cell.acc(r.robust if r else None) for r in results])
        worst = [ix.worst(norm, eps) for ix in indexes]
        if any(w is not None for w in worst):
            rows.append([Cell(WORST)] + [Cell.acc(w.robust if w else None) for w in worst])
        tables.append(Table([threat_text(norm, text)] + [record_name(rec) for rec in records], rows, [], ""))
    return tables


def detail_tables(record: EvalRecord) -> list[Table]:
    """One record, per threat point: a row per attack and the worst case, with attacked, broken, wall time,
    queries and projected violations (the sanity attack, if any, in a table of its own); for a randomized model
    verdicted over several draws, the expected accuracy too (:func:`~kwta_robust.report.expected_cells`: in cascade
    mode over the attacks up to that row)."""
    tables = []
    headers = ["robust", "attacked", "broken", "time (s)", "queries", "violations"] + expected_column(record)

    index = RecordIndex(record)
    for norm, eps, text in threat_points([record]):
        rows = []
        at = index.results_at(norm, eps)
        for i, r in enumerate(at):
            name = f"+{r.label}" if is_cumulative(r) else r.label
            rows.append([Cell(name), Cell(r.kind), Cell.acc(r.robust), Cell(r.n_attacked), Cell(r.n_broken),
                         Cell(round(r.wall_time_s, 2)), Cell(r.queries), Cell(r.violations)]
                        + expected_cells(record, at[:i + 1] if is_cumulative(r) else [r]))
        w = index.worst(norm, eps)
        if w is not None:
            rows.append([Cell(WORST), Cell("-"), Cell.acc(w.robust)] + [Cell(None)] * 5 + expected_cells(record, at))
        tables.append(Table([threat_text(norm, text), "kind", *headers], rows, [], ""))
    if record.sanity:
        rows = [[Cell(f"{r.label} {threat_text(r.norm, r.eps_text)}"), Cell(r.kind), Cell.acc(r.robust),
                 Cell(r.n_attacked), Cell(r.n_broken), Cell(round(r.wall_time_s, 2)), Cell(r.queries),
                 Cell(r.violations)]
                + expected_cells(record, [r])
                for r in record.sanity]
        tables.append(Table(["sanity attack", "kind", *headers], rows, [], ""))
    return tables


# ---------------------------------------------------------------------------------------------------------------
# aligned Markdown within a width
# ---------------------------------------------------------------------------------------------------------------
def md_cell_text(cell: Cell) -> str:
    """A cell as Markdown: its text escaped (:func:`~kwta_robust.md_text.md_cell`: a record's label is whatever its
    ``model.label`` holds), then its mark as written (the project's ``*`` after a matrix cell, not emphasis)."""
    return md_cell(cell_text(replace(cell, mark=""))) + cell.mark


def _texts(table: Table) -> tuple[list[str], list[list[str]], list[bool]]:
    rows = [[md_cell_text(c) for c in row] for row in table.rows]
    numeric = [bool(rows) and all(row[i] == "—" or isinstance(table.rows[r][i].value, (int, float)) or
                                  table.rows[r][i].percent for r, row in enumerate(rows))
               for i in range(len(table.headers))]
    return [md_cell(h) for h in table.headers], rows, numeric


def _shorten(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    kept = text[:max(1, width - 1)]
    odd = (len(kept) - len(kept.rstrip("\\"))) % 2  # a backslash cut from the character it escapes: dropped
    return kept[:len(kept) - odd] + "…"


def _continued(rows: list[list[str]], columns: Sequence[int], limit: int) -> list[tuple[list[str], bool]]:
    """``rows`` with each cell of ``columns`` longer than ``limit`` (a ``, ``-separated list: flag codes) broken
    after its commas and continued on the lines below (their other cells empty), so no item is cut off; each line
    with whether it continues the row above."""
    wrapped = []
    for row in rows:
        parts = {i: textwrap.wrap(row[i], limit, break_long_words=False, break_on_hyphens=False) or [""]
                 for i in columns if i < len(row) and len(row[i]) > limit}
        for line in range(max((len(p) for p in parts.values()), default=1)):
            wrapped.append(([(parts[i][line] if line < len(parts[i]) else "") if i in parts else
                             (text if not line else "") for i, text in enumerate(row)], line > 0))
    return wrapped


def fit_columns(widths: Sequence[int], width: int = WIDTH, keys: int = 1) -> list[list[int]]:
    """Column index groups, each starting with the ``keys`` columns that name a row (column 0 by default), whose
    Markdown lines (``| a | b |``) fit ``width``."""
    keys = max(1, min(keys, len(widths)))
    first = sum(widths[:keys]) + 3 * keys + 1
    groups: list[list[int]] = []
    current: list[int] = list(range(keys))
    used = first
    for i in range(keys, len(widths)):
        need = widths[i] + 3
        if len(current) > keys and used + need > width:
            groups.append(current)
            current, used = list(range(keys)), first
        current.append(i)
        used += need
    groups.append(current)
    return groups


def aligned_markdown(table: Table, width: int = WIDTH) -> str:
    """``table`` as aligned Markdown (numbers right-aligned), split into column groups that fit ``width``."""
    headers, rows, numeric = _texts(table)
    limit = max(8, (width - 7) // 2)  # two columns always fit
    headers = [_shorten(h, limit) for h in headers]
    lines = _continued(rows, table.wrap_columns, limit)
    rows = [[_shorten(t, limit) for t in row] for row, _ in lines]
    widths = [max([3, len(headers[i])] + [len(row[i]) for row in rows]) for i in range(len(headers))]
    keys = max(1, min(table.key_columns, len(widths)))
    room = width - 1 - 3 * (keys + 1) - max(widths[keys:], default=0)
    if keys > 1 and sum(widths[:keys]) > room:  # the key columns (the protocol's model, label) and the widest other
        cap = max(8, room // keys)               # would not fit: the key columns share what is left
        headers = [_shorten(h, cap) if i < keys else h for i, h in enumerate(headers)]
        rows = [[_shorten(t, cap) if i < keys else t for i, t in enumerate(row)] for row in rows]
        widths = [max([3, len(headers[i])] + [len(row[i]) for row in rows]) for i in range(len(headers))]
    blocks = []
    for group in fit_columns(widths, width, table.key_columns):
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(cells[i].rjust(widths[i]) if numeric[i] and i else cells[i].ljust(widths[i])
                                     for i in group) + " |"
        rule = "|" + "|".join(("-" * (widths[i] + 1) + ":") if numeric[i] and i else "-" * (widths[i] + 2)
                              for i in group) + "|"
        # a wrapped cell's continued lines go only where they hold text: in a group without its column (the
        # overview's flags, split off on a terminal) they were blank rows under every flagged model
        shown = [row for row, (_, more) in zip(rows, lines) if not more or any(row[i] for i in group)]
        blocks.append("\n".join([line(headers), rule, *(line(row) for row in shown)]))
    return "\n\n".join(blocks) + "\n"


#: A space before a token that would start a block at the start of a wrapped line: a heading (``#``), a quote
#: (``>``), a list item (``-``, ``+``, ``*``, ``1.``, ``1)``) or a setext underline (a closing ``=``/``-`` run).
_BEFORE_BLOCK = re.compile(r"\s+(?=#|>|[-+*](?:\s|$)|\d{1,9}[.)](?:\s|$)|(?:=+|-+)\s*$)")
#: The space after a word ending in an unpaired backslash: a line ending in it would be a hard line break (the
#: backslash dropped).
_AFTER_BACKSLASH = re.compile(r"(?<!\\)((?:\\\\)*\\)(\s+)")
_GLUE = "\ue000"  # a private-use character standing for a space no line may break at
_BLOCK_AT = re.compile(rf"[#>+*={_GLUE}-]|\d{{1,9}}[.)]")  # where a long word's cut would leave such a line


class _MarkdownWrapper(textwrap.TextWrapper):
    """Breaks a long word neither between a backslash and the character it escapes (a backslash at a line's end is
    a hard line break, and the next line's ``*`` or ``<`` is no longer escaped) nor before a character that would
    start a block on the next line."""

    def _handle_long_word(self, reversed_chunks: list[str], cur_line: list[str], cur_len: int, width: int) -> None:
        chunk, end = reversed_chunks[-1], (width - cur_len if width >= 1 else 1)  # textwrap's cut
        cut = next((c for c in range(end, max(end - 10, 0), -1) if c < len(chunk)  # "\\*" and "123." kept whole
                    and (c - len(chunk[:c].rstrip("\\"))) % 2 == 0 and not _BLOCK_AT.match(chunk, c)), end)
        if 0 < cut < len(chunk):
            cur_line.append(chunk[:cut])
            reversed_chunks[-1] = chunk[cut:]
        else:
            super()._handle_long_word(reversed_chunks, cur_line, cur_len, width)


def wrap(text: str, width: int = WIDTH, prefix: str = "", indent: str | None = None) -> str:
    """``text`` (Markdown) wrapped to ``width``, the first line starting with ``prefix`` and the others with
    ``indent`` (default: spaces under ``prefix``); never broken where the next line would start a heading, quote or
    list (``a # b`` read as a heading), after an unpaired backslash (``C:\\models\\ x``) or inside a backslash escape
    (:class:`_MarkdownWrapper`). ``prefix`` is not a word of the text: the first line always carries some text."""
    glued = text if _GLUE in text else _AFTER_BACKSLASH.sub(lambda m: m.group(1) + _GLUE * len(m.group(2)),
                                                             _BEFORE_BLOCK.sub(lambda m: _GLUE * len(m.group()), text))
    rest = " " * len(prefix) if indent is None else indent
    return _MarkdownWrapper(width, initial_indent=prefix, subsequent_indent=rest, break_long_words=True,
                            break_on_hyphens=False).fill(glued).replace(_GLUE, " ")


def heading(title: str, width: int = WIDTH) -> str:
    """``### title`` wrapped to ``width``, the title's text on the heading's line: ``###`` was a word of the wrapped
    text, so a first word longer than ``width - 4`` (a long label without spaces) moved to the next line and left an
    empty ``###`` heading above it; the title's outer spaces (which Markdown drops from a heading) are dropped."""
    return wrap(md_escape(title.strip(), block_start=True), width, "### ", indent="")


def terminal_markdown(tables: Sequence[Table], *, title: str = "", notes: Sequence[str] = (),
                      width: int = WIDTH) -> str:
    """Tables as aligned Markdown under ``title``, then the notes as a wrapped list; every line ≤ ``width``."""
    parts = [heading(title, width) + "\n"] if title.strip() else []
    parts += [aligned_markdown(t, width) for t in tables]
    if notes:
        parts.append("\n".join(wrap(md_escape(n, block_start=True), width, "- ") for n in notes) + "\n")
    return "\n".join(parts)


def _detail_notes(record: EvalRecord) -> list[str]:
    """The long table's notes, with the overview table's noise score column explained after the noise probes' notes
    as in every other layout: ``evaluate`` printed a bare count (``137``) that grows with n and the levels."""
    notes = detail_table(record).notes
    after = max((i + 1 for i, note in enumerate(notes) if note.startswith("noise ")), default=len(notes))
    return notes[:after] + noise_score_notes([record]) + notes[after:]


def narrow_notes(records: Sequence[EvalRecord], *, detail: bool = False) -> list[str]:
    """The notes under narrow tables: the legend, the meaning of ``+`` rows, transfer sources and every flag with
    its evidence, and the sanity attack's result (``detail``: the long table's notes of one record, with its noise
    probes and its sanity attack in a table of its own)."""
    notes = _detail_notes(records[0]) if detail else \
        [f"Robust accuracy in % with 95% {records[0].ci_method} intervals; worst case = per-sample minimum over all "
         "attacks."] + comparability_notes(records) + partial_notes(records) + acted_on_notes(records) \
        + evidence_notes(records)
    if any(is_cumulative(r) for rec in records for r in rec.results):
        notes.insert(1, "'+' rows (cascade mode): robust accuracy after that attack and every attack above it.")
    return notes


def narrow_markdown(records: Sequence[EvalRecord], *, detail: bool = False, title: str = "",
                    extra_notes: Sequence[str] = (), width: int = WIDTH) -> str:
    """The ``md`` format of records: the narrow layout within ``width`` (``detail``: :func:`detail_tables` per
    record, else :func:`threat_tables` side by side), the notes wrapped below."""
    if detail:
        blocks = [terminal_markdown([overview_table([rec]), *detail_tables(rec)], title=title or record_name(rec),
                                    notes=[*extra_notes, *narrow_notes([rec], detail=True)], width=width)
                  for rec in records]
        return "\n".join(blocks)
    paired = paired_table(records) if len(records) > 1 else None
    tables = [overview_table(records), *threat_tables(records), *([paired] if paired else [])]
    own = [note for table in tables for note in table.notes]  # the noise score's, the paired comparison's
    notes = dict.fromkeys([*extra_notes, *narrow_notes(records), *own])  # a settings note both tables make: once
    return terminal_markdown(tables, title=title, notes=list(notes), width=width)
