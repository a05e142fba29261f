"""A compare record's matrix cell without its transfer attack (:mod:`kwta_robust.matrix_transfer`): its flags are
those ``evaluate`` raises for the same model and config, but for the ``black-box-beats-white-box`` flag its transfer
attack raised, which is kept (matrix51: the transfer attack broke, on the cell's own model, samples PGD left robust —
gradient masking the cell's PGD number does not show; cmpflags50 had dropped it)."""

from __future__ import annotations

import pytest

import kwta_robust.git_revision as git_revision
from eval_helpers import make_record
from kwta_robust.diagnostics import Thresholds, run_checks
from kwta_robust.matrix import WORST, build_matrices, legend
from kwta_robust.matrix_transfer import suite_view
from test_matrix51_transfer_flag import COMMIT, compare_record as _compare_record  # pgd 8 of 10, transfer breaks 5


@pytest.fixture(autouse=True)
def this_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(git_revision, "git_commit", lambda root: COMMIT)
    monkeypatch.setattr(git_revision, "tracked_changes", lambda root: False)


def test_the_transfer_attacks_flag_stays_with_the_cell_the_others_are_evaluates() -> None:
    record = _compare_record()
    assert "black-box-beats-white-box" in {f.code for f in record.diagnostics if f.severity == "critical"}
    view = suite_view(record)
    evaluated = make_record([record.results[0]])  # evaluate's record of the same run: pgd alone
    assert sorted((f.code, f.severity) for f in view.diagnostics if f.code != "black-box-beats-white-box") == \
        sorted((f.code, f.severity) for f in run_checks(evaluated, Thresholds()))
    matrix = next(m for m in build_matrices([record]) if m.metric == WORST)
    assert list(matrix.flags.values()) == [["black-box-beats-white-box"]]
    line = next(n for n in legend([matrix]) if n.startswith("records with transfer attacks:"))
    assert "model (transfer; black-box-beats-white-box kept: transfer (crafted on relu) beat pgd)" in line


def test_the_legend_says_when_another_versions_thresholds_leave_the_flags_as_stored() -> None:
    record = _compare_record()
    del record.config["diagnostics"]["thresholds"]["min_count"]  # a record of a version without that threshold
    view = suite_view(record)
    assert view.diagnostics == record.diagnostics  # nothing recomputed: the flags as stored
    line = next(n for n in legend(build_matrices([record])) if n.startswith("records with transfer attacks:"))
    assert ("model (transfer; flags as stored: its config's diagnostics.thresholds are not this version's; "
            "black-box-beats-white-box kept: transfer (crafted on relu) beat pgd)") in line
