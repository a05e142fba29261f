"""The report as Markdown: ``kwta-robust report RECORD.json... [--sweep DIR] --out report.md``.

``report --out`` picks the format by the file's suffix (:func:`report_format`): ``.html``/``.htm`` give the
self-contained HTML page (:mod:`kwta_robust.html_report`), ``.md``/``.markdown`` the tables the project renders as
Markdown from the same records — the wide table (a row per record) with its notes, the paired comparison, and with a
sweep its robustness matrices — as ``compare.md`` and a sweep's ``matrices.md`` hold them. Any other suffix is
refused: ``--out x.json`` used to write HTML into a file every tool would read as JSON.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from kwta_robust.errors import ConfigError
from kwta_robust.formats import render_matrices, render_table
from kwta_robust.html_report import report_title, write_report
from kwta_robust.html_sweep import SweepRun
from kwta_robust.matrix import build_matrices
from kwta_robust.sweep_lost import mark_lost
from kwta_robust.paired import paired_table
from kwta_robust.report import compare_table
from kwta_robust.results import EvalRecord, as_records, atomic_write_text
from kwta_robust.safe_paths import check_output_file

logger = logging.getLogger(__name__)

#: The report's format by the output file's suffix (lower case).
REPORT_FORMATS: dict[str, str] = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}


def report_format(path: str | Path, where: str = "--out") -> str:
    """``"html"`` or ``"md"``, by ``path``'s suffix; a one-line ConfigError naming ``where`` and the accepted
    suffixes for any other (nothing is written)."""
    suffix = Path(path).suffix.lower()
    if suffix not in REPORT_FORMATS:
        html = ", ".join(s for s, f in REPORT_FORMATS.items() if f == "html")
        md = ", ".join(s for s, f in REPORT_FORMATS.items() if f == "md")
        raise ConfigError(f"{where}: {str(path)!r} ends in {suffix or 'no suffix'!r}; the report is written as HTML "
                          f"({html}) or Markdown ({md}): give a path ending in one of them")
    return REPORT_FORMATS[suffix]


def build_markdown_report(records: Sequence[EvalRecord], *, sweep: SweepRun | None = None,
                          title: str | None = None) -> str:
    """The report as Markdown: the wide table of ``records`` (and a ``sweep``'s cell records) under the title,
    the paired comparison, then the sweep's robustness matrices with its failed cells in their legend."""
    records = as_records(records, "build_markdown_report") + (list(sweep.records) if sweep is not None else [])
    if not records:
        raise ConfigError("report: no records given; pass RECORD.json files or --sweep DIR")
    parts = [render_table(compare_table(records, title=report_title(records, sweep, title)), "wide")]
    paired = paired_table(records)
    if paired is not None:
        parts.append(render_table(paired, "wide"))
    if sweep is not None and sweep.records:
        failed = [f"failed cell (no record): {c.get('label')}: {c.get('error')}" for c in sweep.cells
                  if c.get("status") == "failed"]  # as the page names them
        title = "" if sweep.of_records else sweep.name  # records given: titled as table --matrix titles them
        matrices = build_matrices(sweep.records, title=title, notes=failed, command=sweep.command)
        mark_lost(matrices, sweep.lost)  # a cell listed as done whose record is gone: marked, not 'never run'
        parts.append(render_matrices(matrices, "wide"))
    return "\n".join(parts)


def write_any_report(path: str | Path, records: Sequence[EvalRecord], *, sweep: SweepRun | None = None,
                     title: str | None = None) -> Path:
    """Write the report in the format ``path``'s suffix names (:func:`report_format`), atomically; returns the
    path."""
    if report_format(path) == "html":
        return write_report(path, records, sweep=sweep, title=title)
    check_output_file(path, "write_any_report path")
    path = Path(path)
    atomic_write_text(path, build_markdown_report(records, sweep=sweep, title=title))
    logger.info("Markdown report written to %s", path)
    return path
