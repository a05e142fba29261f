"""``csv``: one header row and a row per table row; every accuracy and interval bound a number (percent) in its
own column (:func:`~kwta_robust.formats.base.flat_columns`). Several tables become one (a column names the
record); matrices come as their long form."""

from __future__ import annotations

import csv
import io
from typing import Sequence

from kwta_robust.formats.base import FORMATS, TableFormat, flat_columns, merged
from kwta_robust.report import Table


def to_csv(table: Table) -> str:
    headers, rows = flat_columns(table)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
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
