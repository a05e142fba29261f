"""``wide``: the single wide Markdown table (a row per record, every attack × epsilon a column; with ``detail``
a row per attack and epsilon of each record) — the layout of ``compare.md`` and ``quickstart.md``; robustness
matrices as GitHub Markdown tables, their legend one line per note (a sweep's ``matrices.md``)."""

from __future__ import annotations

from typing import Sequence

from kwta_robust.formats.base import FORMATS, TableFormat
from kwta_robust.formats.md import markdown_matrices, to_markdown
from kwta_robust.matrix import RobustnessMatrix
from kwta_robust.report import Table


@FORMATS.register("wide")
class WideMarkdown(TableFormat):
    """one Markdown table, a row per record"""

    name = "wide"
    paired_after_records = True
    matrices_file = "matrices.md"

    def table(self, table: Table) -> str:
        return to_markdown(table)

    def matrices(self, matrices: Sequence[RobustnessMatrix]) -> str:
        return markdown_matrices(matrices)
