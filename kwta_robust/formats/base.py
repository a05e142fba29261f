"""The table-format interface, its registry and the dispatching render functions (see :mod:`kwta_robust.formats`).

A format renders a :class:`~kwta_robust.report.Table` (:meth:`TableFormat.table`); the other methods have
defaults built on it, which a format overrides where its layout differs:

* :meth:`TableFormat.tables` — several tables (the long layout, one per record): joined by a blank line;
* :meth:`TableFormat.records` — what a command prints: the wide table (``detail``: the long tables), and in a
  format for people (``paired_after_records``) the paired comparison of several records below it; in the others
  (CSV, JSON) the noise results and the paired comparison's numbers as columns of the wide table instead
  (:mod:`kwta_robust.noise_columns`, :mod:`kwta_robust.paired_columns`);
* :meth:`TableFormat.matrices` — robustness matrices: the long form, a row per (matrix, cell).

``matrices_file`` names the file a sweep writes its matrices to in the format (``None``: not written).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

from kwta_robust.errors import ConfigError, is_finite_number
from kwta_robust.matrix import RobustnessMatrix, build_matrices, long_table
from kwta_robust.noise_columns import with_noise_columns
from kwta_robust.numbers import percent_of, table_number
from kwta_robust.paired import paired_table
from kwta_robust.paired_columns import LONG_PAIRED_HEADERS, LONG_PAIRED_NOTE, long_paired_cells, with_paired_columns
from kwta_robust.registry import Registry
from kwta_robust.report import Cell, Table, compare_table, detail_table
from kwta_robust.results import EvalRecord, as_records

#: Table layouts of records: ``wide`` a row per record, ``long`` a row per attack and epsilon of each record.
LAYOUTS: tuple[str, ...] = ("wide", "long")


class TableFormat:
    """One output format (subclass it and register the subclass in :data:`FORMATS`)."""

    name: ClassVar[str] = ""
    #: File a sweep writes its robustness matrices to in this format (``None``: the sweep does not write it).
    matrices_file: ClassVar[str | None] = None
    #: Whether :meth:`records` puts the paired comparison of several records (:mod:`kwta_robust.paired`) after the
    #: wide table; machine-readable formats keep one table (their columns would not fit it), with the noise results
    #: (the paired noise rows' numbers too) as columns of it (:func:`~kwta_robust.noise_columns.with_noise_columns`),
    #: then the paired accuracy rows' numbers (:func:`~kwta_robust.paired_columns.with_paired_columns`).
    paired_after_records: ClassVar[bool] = False
    #: Whether the record tables of this format carry the noise and paired numbers as columns (wide and long layout:
    #: :func:`with_data_columns`, :func:`long_tables`); ``None``: where the paired comparison does not follow the
    #: wide table (``md``, which prints it after its own tables, says ``False``).
    data_columns: ClassVar[bool | None] = None

    def has_data_columns(self) -> bool:
        """Whether this format's record tables carry the noise and paired columns (:attr:`data_columns`)."""
        return not self.paired_after_records if self.data_columns is None else self.data_columns

    def table(self, table: Table) -> str:
        """One table as text."""
        raise NotImplementedError

    def tables(self, tables: Sequence[Table]) -> str:
        """Several tables (e.g. one per record), one after the other."""
        return "\n".join(self.table(t) for t in tables)

    def records(self, records: Sequence[EvalRecord], *, detail: bool = False, title: str = "",
                extra_notes: Sequence[str] = ()) -> str:
        """Records as a command prints them: the wide table (a row per record) with ``extra_notes`` first, or with
        ``detail`` the long table of each record."""
        if detail:
            return self.tables(long_tables(records, columns=self.has_data_columns()))
        table = compare_table(records, title=title)
        table.notes[:0] = list(extra_notes)
        if self.has_data_columns():  # one table: every noise and paired number a column, after the old ones
            table = with_data_columns(table, records)
        paired = paired_table(records) if self.paired_after_records and len(records) > 1 else None
        return self.table(table) if paired is None else self.tables([table, paired])

    def matrices(self, matrices: Sequence[RobustnessMatrix]) -> str:
        """Robustness matrices: by default their long form (a row per matrix and cell, every number a column)."""
        return self.table(long_table(matrices))


#: Table formats by name; built-ins are the modules of this package, plug-ins come through the entry point group
#: ``kwta_robust.table_formats`` (a :class:`TableFormat` subclass, or a module registering one).
FORMATS: Registry[type[TableFormat]] = Registry("format", field="--format", plugins=("kwta_robust.formats",),
                                                entry_point_group="kwta_robust.table_formats")


def get_format(name: str, field: str = "--format") -> TableFormat:
    """The format registered as ``name`` (a one-line ``RegistryError`` listing the known ones otherwise)."""
    return FORMATS.get(name, field=field)()


def format_help(prefix: str = "") -> str:
    """``--format`` help text: every registered format with its one-line summary."""
    parts = [f"{entry.name} ({entry.summary})" if entry.summary else entry.name for entry in FORMATS.entries()]
    return prefix + "; ".join(sorted(parts))


def render_table(table: Table, fmt: str) -> str:
    """One table in format ``fmt``."""
    return get_format(fmt).table(table)


def render_records(records: Sequence[EvalRecord], fmt: str = "md", layout: str = "wide") -> str:
    """Records as one table in format ``fmt``: ``wide`` (side by side) or ``long`` (one table per record)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"--layout: unknown layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
    records = as_records(records, "render_records")
    if not records:
        raise ConfigError("table: no records given")
    out = get_format(fmt)
    columns = out.has_data_columns()  # machine-readable: the noise and paired numbers as columns, as it prints them
    if layout == "long":
        return out.tables(long_tables(records, columns=columns))
    table = compare_table(records)
    return out.table(with_data_columns(table, records) if columns else table)


#: How the long layout places the noise columns (JSON keeps the notes; CSV has the column names alone).
LONG_COLUMNS_NOTE = ("long layout: the noise columns follow each record's own columns and hold its numbers on its "
                     "clean row (threat none), empty on its other rows, as the wide layout's row of the record holds "
                     "them; the paired columns follow them, on the row each compares")


def with_data_columns(table: Table, records: Sequence[EvalRecord]) -> Table:
    """``table`` (a row per record of ``records``) with the noise columns (the paired noise rows' numbers too,
    :func:`~kwta_robust.noise_columns.with_noise_columns`), then the paired accuracy rows' numbers
    (:func:`~kwta_robust.paired_columns.with_paired_columns`) after its own: the wide layout of CSV and JSON."""
    return with_paired_columns(with_noise_columns(table, records), records)


def long_tables(records: Sequence[EvalRecord], columns: bool = True) -> list[Table]:
    """The long layout: a table per record (:func:`~kwta_robust.report.detail_table`), with ``columns`` the wide
    layout's noise columns (:func:`~kwta_robust.noise_columns.with_noise_columns`: the same names and numbers) after
    its own, the record's numbers on its clean row (its first) and empty cells on the others, then the paired columns
    (:func:`~kwta_robust.paired_columns.long_paired_cells`: on its clean and worst case rows, the comparison of that
    row's accuracy with the first record's); their notes, with :data:`LONG_COLUMNS_NOTE`, once, under the first
    table. The wide layout's paired columns, one group per threat point, on the clean row made the long layout's
    size grow with the threat points squared."""
    tables = [detail_table(r) for r in records]
    noise = with_noise_columns(Table([], [[] for _ in records]), records) if columns else Table([], [])
    paired = long_paired_cells(records, tables) if columns else None
    if not noise.headers and paired is None:
        return tables
    headers = noise.headers + (list(LONG_PAIRED_HEADERS) if paired is not None else [])
    notes = [*noise.notes, *([LONG_PAIRED_NOTE] if paired is not None else []), LONG_COLUMNS_NOTE]
    out = []
    for i, (table, cells) in enumerate(zip(tables, noise.rows or [[] for _ in records])):
        empty = [Cell(None)] * len(cells)
        rows = [row + (cells if r == 0 else empty) + (paired[i][r] if paired is not None else [])
                for r, row in enumerate(table.rows)]
        out.append(Table(table.headers + headers, rows, [*table.notes, *notes] if i == 0 else table.notes, table.title,
                         table.key_columns, table.wrap_columns))
    return out


def render_stdout(records: Sequence[EvalRecord], fmt: str, *, detail: bool = False, title: str = "",
                  extra_notes: Sequence[str] = ()) -> str:
    """What a command prints for ``records`` in format ``fmt`` (``md``: narrow tables within 120 columns)."""
    out = get_format(fmt)
    records = as_records(records, "render_stdout")
    if not records:
        raise ConfigError("table: no records given")
    return out.records(records, detail=detail, title=title, extra_notes=extra_notes)


def render_matrices(matrices: Sequence[RobustnessMatrix], fmt: str = "md", command: str = "table --matrix") -> str:
    """Robustness matrices in format ``fmt``; ``command`` (the one the user ran) starts the error of none."""
    out = get_format(fmt)
    if not matrices:
        raise ConfigError(f"{command}: no matrices to render")
    return out.matrices(matrices)


def render_records_as_matrices(records: Sequence[EvalRecord], fmt: str = "md", title: str = "") -> str:
    """``kwta-robust table --matrix``: build every matrix from ``records`` and render it."""
    return render_matrices(build_matrices(as_records(records, "render_records_as_matrices"), title=title,
                                          noise_levels=True), fmt)


#: How a machine-readable column of percentages says so (``clean (%)``, ``clean ci_low (%)``).
PERCENT_SUFFIX = " (%)"


def flat_columns(table: Table) -> tuple[list[str], list[list[Any]]]:
    """Machine-readable columns (CSV, JSON): an accuracy column becomes value, ci_low, ci_high (numbers, percent); a
    column of numbers with an interval (a noise score) value, ci_low, ci_high on its own scale (no interval: empty).
    A percent column whose header already says ``(%)`` (``weight sparsity (%)``, a fraction the tables show in %)
    is not suffixed twice. Every such number, and a ``computed`` cell's, has
    :data:`~kwta_robust.numbers.TABLE_DIGITS` significant digits, an accuracy's percentage computed from its counts
    (:func:`_flat_numbers`): 22 of 40 is 55.0, where ``100 * 0.55`` was 55.00000000000001."""
    is_pct = [any(r[i].percent for r in table.rows) for i in range(len(table.headers))]
    has_ci = [not pct and any(r[i].ci is not None for r in table.rows) for i, pct in enumerate(is_pct)]
    headers: list[str] = []
    for h, pct, ci in zip(table.headers, is_pct, has_ci):
        h = h.removesuffix(PERCENT_SUFFIX) if pct else h
        headers += [f"{h}{PERCENT_SUFFIX}", f"{h} ci_low{PERCENT_SUFFIX}", f"{h} ci_high{PERCENT_SUFFIX}"] if pct else \
            [h, f"{h} ci_low", f"{h} ci_high"] if ci else [h]
    rows = []
    for row in table.rows:
        out: list[Any] = []
        for cell, pct, ci in zip(row, is_pct, has_ci):
            if pct or ci:
                values = _flat_numbers(cell, pct)
            elif isinstance(cell.value, float) and not math.isfinite(cell.value):
                values = [None]  # NaN, infinity: missing values (JSON has neither; a record may read 1e999 as inf)
            else:
                values = [table_number(cell.value) if cell.computed and isinstance(cell.value, float) else cell.value]
            if cell.count:  # a count is an integer where it is whole: 6, not 6.0 (its interval bounds stay floats)
                values[0] = whole_count(values[0])
            out += values
        rows.append(out)
    return headers, rows


def whole_count(value: Any) -> Any:
    """A count as CSV and JSON write it: an integer where the (float) value is whole, anything else as it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _flat_numbers(cell: Cell, pct: bool) -> list[float | None]:
    """A cell's value, ci_low and ci_high as :func:`flat_columns` writes them: in % (the value from its counts where
    it has them, :func:`~kwta_robust.numbers.percent_of`) or on their own scale, each to
    :data:`~kwta_robust.numbers.TABLE_DIGITS` significant digits (:func:`~kwta_robust.numbers.table_number`: 22 of 40
    is 55.0, not 55.00000000000001, and equal bounds read alike); ``None`` where missing."""
    scale = 100.0 if pct else 1.0
    values = [scale * v if is_finite_number(v) else None for v in (cell.value, *(cell.ci or (None, None)))]
    if pct and cell.counts is not None and values[0] is not None:
        values[0] = percent_of(*cell.counts)
    return [None if v is None else table_number(v) for v in values]


def merged(tables: Sequence[Table]) -> Table:
    """Several tables as one (machine-readable formats: a column tells the records apart): every table's columns, in
    the order they first come, a column a table lacks empty on its rows. The long tables of records differ in their
    columns (a randomized model's ``expected``): the first table's headers alone dropped the column of a later
    record, and a first record with it left the others' CSV rows short."""
    headers = list(dict.fromkeys(h for t in tables for h in t.headers))
    rows = []
    for t in tables:
        at = {h: i for i, h in enumerate(t.headers)}
        rows += [[row[at[h]] if h in at else Cell(None) for h in headers] for row in t.rows]
    return Table(headers, rows, [n for t in tables for n in t.notes])
