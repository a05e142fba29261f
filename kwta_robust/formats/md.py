"""``md``: Markdown for a terminal — every line within 120 columns (:mod:`kwta_robust.narrow`: attacks as rows,
one table per threat point; robustness matrices aligned, their legend and notes wrapped) — and the Markdown of one
table (text from records escaped where Markdown would format it: :mod:`kwta_robust.md_text`)."""

from __future__ import annotations

from typing import Sequence

from kwta_robust.formats.base import FORMATS, TableFormat
from kwta_robust.matrix import RobustnessMatrix, legend, matrix_table
from kwta_robust.md_text import md_cell, md_escape
from kwta_robust.narrow import WIDTH, md_cell_text, narrow_markdown, terminal_markdown, wrap
from kwta_robust.report import Table
from kwta_robust.results import EvalRecord


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table under its ``### title``, its notes as a list below."""
    lines = [f"### {md_escape(table.title, block_start=True)}", ""] if table.title else []
    lines.append("| " + " | ".join(md_cell(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(md_cell_text(c) for c in row) + " |")
    if table.notes:
        lines.append("")
        lines += [f"- {md_escape(n, block_start=True)}" for n in table.notes]  # labels, paths, messages in notes
    return "\n".join(lines) + "\n"


def markdown_matrices(matrices: Sequence[RobustnessMatrix]) -> str:
    """The matrices' legend once, then one Markdown table per matrix."""
    head = "\n".join(f"- {md_escape(n, block_start=True)}" for n in legend(matrices)) + "\n"
    return "\n".join([head, *(to_markdown(matrix_table(m, with_legend=False)) for m in matrices)])


def terminal_matrices(matrices: Sequence[RobustnessMatrix], width: int = WIDTH) -> str:
    """:func:`markdown_matrices` within ``width`` columns: the legend wrapped, each matrix aligned under its title
    (a matrix wider than ``width`` split into column groups, its ``k/N`` column repeated)."""
    head = "\n".join(wrap(md_escape(n, block_start=True), width, "- ") for n in legend(matrices)) + "\n"
    tables = [matrix_table(m, with_legend=False) for m in matrices]
    return "\n".join([head, *(terminal_markdown([t], title=t.title, width=width) for t in tables)])


@FORMATS.register("md")
class Markdown(TableFormat):
    """Markdown within 120 columns, one table per threat point"""

    name = "md"
    data_columns = False  # the paired comparison and the noise notes follow its tables (kwta_robust.narrow)

    def table(self, table: Table) -> str:
        return to_markdown(table)

    def records(self, records: Sequence[EvalRecord], *, detail: bool = False, title: str = "",
                extra_notes: Sequence[str] = ()) -> str:
        return narrow_markdown(records, detail=detail, title=title, extra_notes=extra_notes)

    def matrices(self, matrices: Sequence[RobustnessMatrix]) -> str:
        return terminal_matrices(matrices)
