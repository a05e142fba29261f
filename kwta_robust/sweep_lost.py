"""Sweep cells whose record was lost after the sweep finished them: the manifest (``sweep.json``) lists the cell as
``done`` but its record file is missing, unreadable or partial. ``report --sweep`` dropped such a cell and its
matrices showed ``—``, as for a cell never run; a reader could not tell "not run yet" from "lost or damaged". The
matrices now mark the cell (:data:`~kwta_robust.matrix.MARK`) and a note names it, what the manifest says, what is on
disk and the fix. Cells the manifest lists as ``pending`` or ``failed`` keep their rendering.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from kwta_robust.errors import is_finite_number
from kwta_robust.matrix import DENSE, MARK, RELU_RATIO, RobustnessMatrix, cell_name, method_text
from kwta_robust.results import EvalRecord, RecordError, load_record

#: The manifest status of a cell whose record the sweep wrote (:mod:`kwta_robust.sweep.manifest`).
DONE = "done"


@dataclass(frozen=True)
class LostCell:
    """A cell the manifest lists as done whose record is not usable: where it sits and the note that says why."""

    kwta_ratio: float
    weight_sparsity: float
    pruning_method: str
    reason: str
    note: str


def read_cell_record(directory: Path, cell: Mapping, path: Path) -> tuple[EvalRecord | None, LostCell | None]:
    """The complete record at ``path`` of the manifest's ``cell``, or (for a cell listed as done) what is lost.

    A missing, unreadable or partial record of a cell the manifest lists as done is a :class:`LostCell`; any other
    cell keeps today's handling (a missing record skipped, an unreadable one refused, a partial one dropped)."""
    done = cell.get("status") == DONE
    if not path.is_file():
        return None, _lost(directory, cell, "no record file is there") if done else None
    try:
        record = load_record(path)
    except RecordError as exc:
        if not done:
            raise
        what = str(exc).removeprefix(f"record: {path} ").split(" (")[0]  # e.g. 'is not valid JSON'
        return None, _lost(directory, cell, f"the record file {what[:200]}")
    if record.status != "complete":
        return None, _lost(directory, cell, f"the record is {record.status} (status not complete)") if done else None
    return record, None


def _lost(directory: Path, cell: Mapping, found: str) -> LostCell | None:
    """The :class:`LostCell` of a manifest cell listed as done (``None`` if its coordinates are not numbers)."""
    ratio, sparsity = cell.get("kwta_ratio"), cell.get("weight_sparsity")
    if not is_finite_number(ratio) or not is_finite_number(sparsity):
        return None
    method = DENSE if not sparsity else str(cell.get("pruning_method"))
    evaluated = " and evaluated" if cell.get("evaluated") else ""
    reason = (f"sweep.json lists cell {cell.get('label')} as done{evaluated} but {found} at {cell.get('record')}; "
              f"re-evaluate it: kwta-robust sweep CONFIG --out-dir {directory}")
    where = f"{cell_name(float(ratio), float(sparsity))}{method_text(method)}"
    note = f"warning: —{MARK} = record lost: {where}: {reason}"
    return LostCell(float(ratio), float(sparsity), method, reason, note)


def mark_lost(matrices: Sequence[RobustnessMatrix], lost: Sequence[LostCell]) -> None:
    """Mark each lost cell in the matrices of its pruning method (a dense cell: in all) as not comparable, adding its
    row or column where no record gave one, and add its note to every matrix (the legend lists it once)."""
    for m in matrices:
        for cell in lost:
            if cell.pruning_method in (m.pruning_method, DENSE):
                key = (cell.kwta_ratio, cell.weight_sparsity)
                if cell.kwta_ratio not in m.ratios:
                    m.ratios = sorted([*m.ratios, cell.kwta_ratio], key=lambda r: (r != RELU_RATIO, -r))
                if cell.weight_sparsity not in m.sparsities:
                    m.sparsities = sorted([*m.sparsities, cell.weight_sparsity])
                m.warnings[key] = [*m.warnings.get(key, []), cell.reason]
            m.notes = [*m.notes, cell.note]
