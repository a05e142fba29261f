"""The self-contained HTML report: ``kwta-robust report RECORD.json... [--sweep DIR] --out report.html``.

One file, no network: inline CSS, inline SVG charts, no script. Everything is rendered from records (tables via
:mod:`kwta_robust.report`, matrices via :mod:`kwta_robust.matrix`); the same records give the same bytes (no
timestamps or random ids are added). Sections: :mod:`kwta_robust.html_records` and :mod:`kwta_robust.html_sweep`.

``evaluate``, ``compare``, ``quickstart`` and ``sweep`` write it next to their records (:func:`write_report`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from kwta_robust import __version__
from kwta_robust.errors import ConfigError
from kwta_robust.html import page
from kwta_robust.html_records import record_sections
from kwta_robust.html_sweep import SweepRun, sweep_section
from kwta_robust.results import EvalRecord, as_records, atomic_write_text
from kwta_robust.safe_paths import check_output_file

logger = logging.getLogger(__name__)


def _subtitle(records: Sequence[EvalRecord], sweep: SweepRun | None) -> str:
    data = []
    for rec in records:
        text = f"{rec.dataset.get('name')} {rec.dataset.get('split')}, n={rec.clean.n}"
        if text not in data:
            data.append(text)
    partial = sum(1 for r in records if r.status != "complete")
    parts = [f"{len(records)} record{'s' if len(records) != 1 else ''}"]
    if data:
        parts.append("; ".join(data))
    if sweep is not None:
        parts.append(sweep.what)
    if partial:
        parts.append(f"{partial} partial (not final)")
    parts.append(f"rendered by kwta-robust {__version__}")
    return " · ".join(parts)


def report_title(records: Sequence[EvalRecord], sweep: SweepRun | None, title: str | None) -> str:
    """``title``, or by default the sweep's name or the first six records' labels: one default for the HTML and the
    Markdown report (:mod:`kwta_robust.md_report`), so both files of one set of records carry the same title."""
    if title is not None:
        return title
    if sweep is not None:
        return f"kwta-robust: {sweep.name}"
    return "kwta-robust: " + ", ".join(r.label for r in records[:6]) + (" …" if len(records) > 6 else "")


def build_report(records: Sequence[EvalRecord], *, sweep: SweepRun | None = None, title: str | None = None,
                 notes: Sequence[str] = ()) -> str:
    """The report as one HTML string. ``records`` are shown side by side; a ``sweep`` adds its cell records to
    them and its matrices, heatmaps and curves; ``notes``: headline lines the overview begins with (those the
    Markdown table of the same records begins its notes with, e.g. the quickstart's verdict per model)."""
    records = as_records(records, "build_report") + (list(sweep.records) if sweep is not None else [])
    if not records:
        raise ConfigError("report: no records given; pass RECORD.json files or --sweep DIR")
    title = report_title(records, sweep, title)
    sections = record_sections(records, notes)
    if sweep is not None:
        sections.insert(2, sweep_section(sweep))
    return page(title, _subtitle(records, sweep), sections)


def write_report(path: str | Path, records: Sequence[EvalRecord], *, sweep: SweepRun | None = None,
                 title: str | None = None, notes: Sequence[str] = ()) -> Path:
    """Write :func:`build_report` to ``path`` atomically; returns the path (a one-line ConfigError if ``path`` cannot
    be written: a folder, a NUL byte, a read-only folder, ...)."""
    check_output_file(path, "write_report path")
    path = Path(path)
    atomic_write_text(path, build_report(records, sweep=sweep, title=title, notes=notes))
    logger.info("HTML report written to %s", path)
    return path


def report_path_for(record_path: str | Path) -> Path:
    """Where the report of one record goes: next to it, ``.html`` instead of ``.json``."""
    return Path(record_path).with_suffix(".html")
