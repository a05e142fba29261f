"""Output formats of the record tables and robustness matrices: one module per format, each registering a
:class:`~kwta_robust.formats.base.TableFormat` in :data:`FORMATS` (a generic :class:`~kwta_robust.registry.Registry`).

Built-ins (one file each): ``md`` (Markdown within 120 columns for a terminal; :mod:`kwta_robust.narrow`),
``wide`` (one wide Markdown table), ``csv``, ``latex`` (booktabs) and ``json``. The first lookup imports every
module of this package, so a new format is one new file here; another distribution adds one through the entry
point group ``kwta_robust.table_formats``. ``--format`` choices and help text come from :data:`FORMATS`.

Dispatch goes through :func:`get_format`: :func:`render_table` (one table), :func:`render_records` (records in
the wide or long layout), :func:`render_stdout` (what a command prints) and :func:`render_matrices`.
"""

from kwta_robust.formats.base import (
    FORMATS,
    LAYOUTS,
    TableFormat,
    flat_columns,
    format_help,
    get_format,
    render_matrices,
    render_records,
    render_records_as_matrices,
    render_stdout,
    render_table,
)

__all__ = [
    "FORMATS", "LAYOUTS", "TableFormat", "flat_columns", "format_help", "get_format", "render_matrices",
    "render_records", "render_records_as_matrices", "render_stdout", "render_table",
]
