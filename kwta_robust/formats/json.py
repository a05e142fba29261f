"""``json``: ``{"title", "columns", "rows": [{column: value}], "notes"}`` with every accuracy and interval bound a
number (percent) of its own (:func:`~kwta_robust.formats.base.flat_columns`); several tables become one;
matrices come as their long form."""

from __future__ import annotations

import json
from typing import Sequence

from kwta_robust.formats.base import FORMATS, TableFormat, flat_columns, merged
from kwta_robust.report import Table


def to_json(table: Table) -> str:
    """``table`` as JSON text: title, columns, one object per row, notes."""
    headers, rows = flat_columns(table)
    data = {"title": table.title, "columns": headers, "rows": [dict(zip(headers, r)) for r in rows],
            "notes": table.notes}
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


@FORMATS.register("json")
class Json(TableFormat):
    """one JSON object per table, numbers as numbers"""

    name = "json"

    def table(self, table: Table) -> str:
        return to_json(table)

    def tables(self, tables: Sequence[Table]) -> str:
        return to_json(merged(tables))
