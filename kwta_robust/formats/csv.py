"""``csv``: one header row and a row per table row; every accuracy and interval bound a number (percent) in its
own column (:func:`~kwta_robust.formats.base.flat_columns`). Several tables become one (a column names the
record); matrices come as their long form. The table's notes are left out, except what ``[partial]`` means: with a
partial record, a last column ``note`` holds :data:`~kwta_robust.report.PARTIAL_NOTE` on its rows (empty on the
others), so that every row keeps the header's columns.

A text cell that a spreadsheet would take for a formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return: a label from a shared record such as ``=HYPERLINK(...)``, or the cascade's ``+attack``) is written
with a leading ``'`` (:func:`csv_text`), as OWASP advises; numbers, and text that reads as one (``-62.0``), stay
as they are."""

from __future__ import annotations

import csv
import io
from typing import Sequence

from kwta_robust.formats.base import FORMATS, TableFormat, flat_columns, merged
from kwta_robust.report import PARTIAL_MARK, PARTIAL_NOTE, Table
from kwta_robust.visible_text import visible


#: First characters that make a spreadsheet (Excel, LibreOffice, Google Sheets) evaluate a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """``value`` safe to open in a spreadsheet: a leading ``'`` where it would start a formula (``-`` alone and
    text that reads as a number are left as they are)."""
    if not value.startswith(FORMULA_STARTS) or value == "-":
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def _csv_str(value: str) -> str:
    """:func:`csv_text`, a carriage return as a line feed: the writer quotes a field with ``\\n`` (its line
    terminator) but not one with a lone ``\\r``, which a CSV reader takes for the end of the row. Control and
    bidirectional control characters are written as escapes (:func:`~kwta_robust.visible_text.visible`)."""
    return csv_text(visible(value)).replace("\r\n", "\n").replace("\r", "\n")


def csv_number(value: float) -> str:
    """A float in full, as JSON writes it: the shortest text that reads back as the same float (``66.66666666666667``,
    ``0.03137254901960784`` for 8/255), ``75`` for ``75.0``. Six significant digits (as before) lost what the other
    formats show: a noise score of 100685.25 was ``100685`` where Markdown and LaTeX print ``100685.3``, and 8/255 and
    0.1 + 0.2 in the long form's ``eps`` column read as other epsilons (``0.0313725``, ``0.3``)."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return csv_number(value)
    return _csv_str(value) if isinstance(value, str) else value


def to_csv(table: Table) -> str:
    """``table`` as CSV text."""
    headers, rows = flat_columns(table)
    noted = PARTIAL_NOTE in table.notes
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([_csv_str(h) for h in headers] + ["note"] * noted)
    for row in rows:
        partial = any(isinstance(v, str) and v.endswith(PARTIAL_MARK) for v in row)
        note = [PARTIAL_NOTE if partial else ""] * noted
        writer.writerow([_csv_cell(v) for v in row] + note)
    return buf.getvalue()


@FORMATS.register("csv")
class Csv(TableFormat):
    """comma-separated values, every number in its own column"""

    name = "csv"
    matrices_file = "matrices.csv"

    def table(self, table: Table) -> str:
        return to_csv(table)

    def tables(self, tables: Sequence[Table]) -> str:
        return to_csv(merged(tables))
