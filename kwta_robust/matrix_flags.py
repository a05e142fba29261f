"""What a matrix cell's record says about its number: the :data:`FLAG_MARK` of a cell whose record holds a critical
diagnostics flag or a warning that its numbers are upper bounds an attack could still lower (:data:`UPPER_BOUND`),
the legend line naming those cells and flags, and the long table's ``flags`` column.

A matrix in Markdown, LaTeX, CSV or JSON travels into a paper without the records, so the mark is on the cell itself
in every format (HTML and PNG heatmaps wrote `` !`` after a critical cell already, and now after such a warning's too);
a matrix none of whose cells is flagged renders as it did before (no mark, no legend line, no ``flags`` column).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping, Sequence

from kwta_robust.report import Cell, Table
from kwta_robust.results import EvalRecord

#: Mark after the number of a cell whose record holds a critical flag or an :data:`UPPER_BOUND` warning.
FLAG_MARK = "!"
#: Warning codes that say the record's robust accuracies are upper bounds that may be overstated, and why (read-only).
UPPER_BOUND: Mapping[str, str] = MappingProxyType({
    "budget-still-lowering": "a larger budget of one attack still broke many samples the smaller left robust: the "
                             "attack has not converged",
    "gates-without-bpda": "top-k gates no BPDA attack acted on: the gradient attacks' numbers are upper bounds that "
                          "masking can inflate (gradient-free attacks fall short of BPDA on kWTA)",
    "selections-outside-layers": "top-k selections outside every layer BPDA acted on: masking as for "
                                 "gates-without-bpda",
    "bpda-straight-through": "a BPDA attack passed the gradient straight through a module that is no 0/1 mask, or "
                             "coarser than the smooth relaxation: its numbers are loose upper bounds",
})
#: Header of the long table's column of the codes that mark a cell (critical ones first, as the record holds them).
FLAGS_COLUMN = "flags"


def critical_flags(record: EvalRecord) -> list[str]:
    """Codes of the record's critical diagnostics flags (the evaluation may be unreliable), in order, once each."""
    codes: list[str] = []
    for flag in record.diagnostics:
        if flag.severity == "critical" and flag.code not in codes:
            codes.append(flag.code)
    return codes


def upper_bound_flags(record: EvalRecord, norm: str | None = None, eps: float | None = None, *,
                      every_point: bool = False) -> list[str]:
    """Codes of the record's warnings in :data:`UPPER_BOUND` (its robust accuracies may be overstated) that bear on
    the threat point ``norm``/``eps``, in order, once each: none for clean accuracy (``norm`` ``None``, unless
    ``every_point``), and a flag whose evidence names a threat point (``budget-still-lowering``) only there."""
    codes: list[str] = []
    for flag in record.diagnostics:
        if flag.severity != "warning" or flag.code not in UPPER_BOUND or flag.code in codes:
            continue
        evidence = flag.evidence if isinstance(flag.evidence, dict) else {}
        at = (evidence.get("norm"), evidence.get("eps"))
        if every_point or (norm is not None and (None in at or at == (norm, eps))):
            codes.append(flag.code)
    return codes


def is_flagged(flags: dict[Any, list[str]], upper: dict[Any, list[str]], key: Any) -> bool:
    """Whether the cell ``key`` carries :data:`FLAG_MARK`: its record's critical codes (``flags``) or upper-bound
    warning codes (``upper``, a matrix's ``flags`` and ``upper_bounds``) are not empty."""
    return bool(flags.get(key) or upper.get(key))


def cell_mark(flagged: bool, warned: bool) -> str:
    """What follows a cell's number in a matrix table: :data:`FLAG_MARK` if ``flagged``, then ``*`` if ``warned``
    (not comparable, :data:`kwta_robust.matrix.MARK`)."""
    return (FLAG_MARK if flagged else "") + ("*" if warned else "")


def upper_bound_note(cells: Sequence[tuple[str, EvalRecord]]) -> list[str]:
    """The legend line naming each cell (``name``, its record) with an :data:`UPPER_BOUND` warning and the codes,
    each code's reason once; none without such a cell. Such a cell is marked in the matrices of the threat points
    its warning bears on (:func:`upper_bound_flags`), not in clean accuracy's."""
    found = [(name, rec, upper_bound_flags(rec, every_point=True)) for name, rec in cells]
    found = [(name, rec, codes) for name, rec, codes in found if codes]
    if not found:
        return []
    codes = list(dict.fromkeys(code for _, _, cs in found for code in cs))
    why = "; ".join(f"{code}: {UPPER_BOUND[code]}" for code in codes)
    where = "; ".join(f"{name} {rec.label} ({', '.join(cs)})" for name, rec, cs in found)
    return [f"{FLAG_MARK} = a warning that the cell's robust accuracies are upper bounds that may be overstated "
            f"({why}; marked at the threat points it names, see each record): {where}"]


def critical_mark_note(any_critical: bool) -> list[str]:
    """The legend line saying that the cells of the critical flags line carry :data:`FLAG_MARK` too."""
    return [f"{FLAG_MARK} after a cell's number: its record holds a critical diagnostics flag (the cells named "
            "above)"] if any_critical else []


def with_flags_column(table: Table, flagged: Sequence[list[str]]) -> Table:
    """The long ``table`` with a last column :data:`FLAGS_COLUMN` holding, per row, the codes that mark its cell
    (``flagged``, a list per row); ``table`` itself where no row is flagged (its CSV and JSON as before)."""
    if not any(flagged):
        return table
    rows = [row + [Cell(" ".join(codes))] for row, codes in zip(table.rows, flagged)]
    return Table([*table.headers, FLAGS_COLUMN], rows, table.notes, table.title, table.key_columns,
                 table.wrap_columns)


def mark_meaning(flags: dict[Any, list[str]], upper: dict[Any, list[str]], keys: Any) -> str | None:
    """What :data:`FLAG_MARK` means on the cells ``keys`` of a matrix (its ``flags`` and ``upper_bounds``), as the
    HTML and PNG heatmaps' captions say it; ``None`` where no cell is marked."""
    keys = list(keys)
    said = [text for marked, text in (
        (any(flags.get(k) for k in keys), "critical diagnostics flags (e.g. gradient masking)"),
        (any(upper.get(k) for k in keys), "a warning that the number is an upper bound that may be overstated "
                                          "(e.g. budget-still-lowering)")) if marked]
    return " or ".join(said) or None
