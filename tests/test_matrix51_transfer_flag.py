"""A compare record's ``black-box-beats-white-box`` flag raised by its transfer attack stays on its matrix cell.

The matrices leave a compare record's transfer attacks out (:mod:`kwta_robust.matrix_transfer`) and recompute the
checks they change; that dropped the critical flag of a transfer attack (crafted on the ReLU twin) that broke samples
PGD left robust on the cell's own model — gradient masking (Carlini et al. 2019, §5), so the PGD and worst-case
numbers the cell shows overstate its robustness — while the legend still named the code among the "recomputed"
ones. The flag is now kept as stored, shown in every matrix of the cell, and the legend names its source model."""

from __future__ import annotations

import pytest

import kwta_robust.git_revision as git_revision
from eval_helpers import make_record, make_result
from kwta_robust import __version__
from kwta_robust.diagnostics import Thresholds, run_checks
from kwta_robust.matrix import build_matrices, legend, long_table
from kwta_robust.matrix_transfer import suite, suite_view
from kwta_robust.results import EvalRecord

#: The commit the records are written and read at (the package need not be imported from a clone).
COMMIT = "51" * 20
CODE = "black-box-beats-white-box"


@pytest.fixture(autouse=True)
def this_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(git_revision, "git_commit", lambda root: COMMIT)
    monkeypatch.setattr(git_revision, "tracked_changes", lambda root: False)


def compare_record(transfer_kills: int = 5) -> EvalRecord:
    """Written here: pgd leaves 8 of 10 robust, the transfer attack (from ``relu``) then breaks ``transfer_kills``."""
    pgd = make_result("pgd", [1] * 8 + [0] * 2, eps=0.1)
    transfer = make_result("transfer", [0] * transfer_kills + [1] * (8 - transfer_kills) + [-1] * 2, eps=0.1,
                           kind="transfer", position=1, cumulative=True)
    transfer.source = "relu"
    record = make_record([pgd, transfer])
    record.model.update({"kwta_ratio": 0.1})
    record.config = {"seed": 0, "diagnostics": {"enabled": True, "thresholds": vars(Thresholds()).copy()}}
    record.provenance = {"plugins": {}, "versions": {"kwta_robust": __version__, "kwta_robust_git": COMMIT}}
    record.diagnostics = run_checks(record, Thresholds())
    return record


def test_the_cell_keeps_the_transfer_attacks_critical_flag_and_the_legend_says_whence() -> None:
    record = compare_record()
    stored = [f for f in record.diagnostics if f.code == CODE]
    assert [f.severity for f in stored] == ["critical"]
    found = suite(record)
    view, codes = found[0], found[1]
    assert [f for f in view.diagnostics if f.code == CODE] == stored  # as stored, not recomputed away
    assert CODE not in codes
    assert [r.label for r in view.results] == ["pgd"]  # the numbers still leave the transfer attack out
    matrices = build_matrices([record])
    assert [m.flags[(0.1, 0.0)] for m in matrices] == [[CODE]] * len(matrices)
    table = long_table(matrices)
    column = table.headers.index("critical_flags")
    assert [row[column].value for row in table.rows] == [CODE] * len(table.rows)
    notes = legend(matrices)
    assert f"k/N 0.1 × 0 (dense) model ({CODE})" in next(n for n in notes if n.startswith("critical diagnostics"))
    line = next(n for n in notes if n.startswith("records with transfer attacks:"))
    assert f"model (transfer; {CODE} kept: transfer (crafted on relu) beat pgd)" in line
    assert "flags recomputed" not in line

    beaten_nowhere = compare_record(transfer_kills=0)  # a transfer attack that broke nothing raises nothing to keep
    assert CODE not in {f.code for f in beaten_nowhere.diagnostics + suite_view(beaten_nowhere).diagnostics}
