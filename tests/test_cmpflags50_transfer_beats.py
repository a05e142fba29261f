"""A compare record's ``black-box-beats-white-box`` flag raised by its transfer attack is no flag of its matrix cell.

The transfer attack (crafted on another compared model) beating PGD is what compare runs it for, and the record keeps
that critical flag; but the matrices leave the transfer attack out (:mod:`kwta_robust.matrix_transfer`), so the cell
shows what ``evaluate`` raises for the same model and config: before, the cell carried the critical mark of an attack
it no longer shows, where the evaluate record of the same model has none."""

from __future__ import annotations

from eval_helpers import make_record, make_result
from kwta_robust.diagnostics import Thresholds, run_checks
from kwta_robust.matrix import WORST, build_matrices, legend
from kwta_robust.matrix_transfer import suite_view
from kwta_robust.results import EvalRecord


def _compare_record() -> EvalRecord:
    """pgd leaves 8 of 10 robust, the transfer attack after it breaks 5 of those (cascade)."""
    pgd = make_result("pgd", [1] * 8 + [0] * 2, eps=0.1)
    transfer = make_result("transfer", [0] * 5 + [1] * 3 + [-1] * 2, eps=0.1, kind="transfer", position=1,
                           cumulative=True)
    transfer.source = "relu"
    record = make_record([pgd, transfer])
    record.model.update({"kwta_ratio": 0.1})
    record.config = {"seed": 0, "diagnostics": {"enabled": True, "thresholds": vars(Thresholds()).copy()}}
    record.diagnostics = run_checks(record, Thresholds())
    return record


def test_the_transfer_attacks_flag_leaves_the_cell_with_the_attack() -> None:
    record = _compare_record()
    assert "black-box-beats-white-box" in {f.code for f in record.diagnostics if f.severity == "critical"}
    view = suite_view(record)
    assert "black-box-beats-white-box" not in {f.code for f in view.diagnostics}
    evaluated = make_record([record.results[0]])  # evaluate's record of the same run: pgd alone
    assert sorted((f.code, f.severity) for f in view.diagnostics) == \
        sorted((f.code, f.severity) for f in run_checks(evaluated, Thresholds()))
    matrix = next(m for m in build_matrices([record]) if m.metric == WORST)
    assert list(matrix.flags.values()) == [[]]
    assert {f.code for f in record.diagnostics} >= {"black-box-beats-white-box"}  # the record is left as it was
    line = next(n for n in legend([matrix]) if n.startswith("compare records:"))
    assert "model (transfer; flags recomputed: black-box-beats-white-box)" in line


def test_the_legend_says_when_another_versions_thresholds_leave_the_flags_as_stored() -> None:
    record = _compare_record()
    del record.config["diagnostics"]["thresholds"]["min_count"]  # a record of a version without that threshold
    view = suite_view(record)
    assert view.diagnostics == record.diagnostics  # nothing recomputed: the flags as stored
    line = next(n for n in legend(build_matrices([record])) if n.startswith("compare records:"))
    assert "model (transfer; flags as stored: its config's diagnostics.thresholds are not this version's)" in line
