"""``csv``: one header row and a row per table row; every accuracy and interval bound a number (percent) in its
own column (:func:`~kwta_robust.formats.base.flat_columns`). Several tables become one (a column names the
record); matrices come as their long form. The table's notes are left out, except what ``[partial]`` means: with a
partial record, a last column ``note`` holds :data:`~kwta_robust.report.PARTIAL_NOTE` on its rows (empty on the
others), so that every row keeps the header's columns."""

from __future__ import annotations

import csv
import io
from typing import Sequence

from kwta_robust.formats.base import FORMATS, TableFormat, flat_columns, merged
from kwta_robust.report import PARTIAL_MARK, PARTIAL_NOTE, Table


def to_csv(table: Table) -> str:
    """``table`` as CSV text."""
    headers, rows = flat_columns(table)
    noted = PARTIAL_NOTE in table.notes
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers + ["note"] * noted)
    for row in rows:
        partial = any(isinstance(v, str) and v.endswith(PARTIAL_MARK) for v in row)
        note = [PARTIAL_NOTE if partial else ""] * noted
        writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row] + note)
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
