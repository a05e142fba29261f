"""A compare cell lists its critical flags in the order the evaluate cell of the same model does.

evaluate stores its flags by severity, then in the checks' registration order (a plug-in check's after the built-in
ones). The matrices recompute, for a compare record, the checks its transfer attacks change
(:func:`kwta_robust.matrix_transfer.suite_flags`) and appended those flags after the stored ones: a top-k model's
``gates-without-bpda``, critical once the transfer attack (counted as gradient-free) is left out, came after a
plug-in check's critical flag, so the long table's ``critical_flags`` column and the legend printed
``own-check gates-without-bpda`` for the compare cell and ``gates-without-bpda own-check`` for the evaluate cell."""

from __future__ import annotations

import dataclasses

import pytest

import kwta_robust.git_revision as git_revision
from eval_helpers import make_record, make_result
from kwta_robust import __version__
from kwta_robust.diagnostics import SEVERITIES, Thresholds, run_checks
from kwta_robust.matrix import build_matrices, long_table
from kwta_robust.results import EvalRecord, Flag

COMMIT = "51" * 20
#: A plug-in check's flag, as a run with the plug-in registered stores it (this process has not registered it).
OWN = Flag("matrix51-own-check", "critical", "a plug-in check's verdict", {})


@pytest.fixture(autouse=True)
def this_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(git_revision, "git_commit", lambda root: COMMIT)
    monkeypatch.setattr(git_revision, "tracked_changes", lambda root: False)


def written(record: EvalRecord) -> EvalRecord:
    """``record`` with the flags evaluate stores (this code's checks, then the plug-in check's) at this commit."""
    record.model.update({"kwta_ratio": 0.125})
    record.config = {"seed": 0, "diagnostics": {"enabled": True, "thresholds": vars(Thresholds()).copy()}}
    record.provenance = {"plugins": {}, "versions": {"kwta_robust": __version__, "kwta_robust_git": COMMIT}}
    record.diagnostics = sorted(run_checks(record, Thresholds()) + [OWN], key=lambda f: SEVERITIES.index(f.severity))
    return record


def test_the_compare_cell_lists_its_critical_flags_as_the_evaluate_cell() -> None:
    gate = {"layers": [{"name": "act", "module_class": "TopK", "kinds": ["gate"], "evidence": {}}]}
    pgd = make_result("pgd", [1] * 6 + [0] * 2, eps=0.1)
    transfer = dataclasses.replace(make_result("transfer", [1] * 6 + [-1] * 2, eps=0.1, kind="transfer",
                                               position=1, cumulative=True), source="relu")
    compared = written(make_record([pgd, transfer], detection=gate))
    evaluated = written(make_record([pgd], detection=gate))
    # before misc53 the transfer counted as gradient-free: the compare record stored gates-without-bpda as a warning
    # and the matrices recomputed it critical, after the plug-in check's flag; now it is stored as evaluate's
    assert [(f.code, f.severity) for f in compared.diagnostics][:2] == [("gates-without-bpda", "critical"),
                                                                        (OWN.code, "critical")]

    def cells(record: EvalRecord) -> list[str]:
        table = long_table(build_matrices([record]))
        return [row[table.headers.index("critical_flags")].value for row in table.rows]

    assert cells(evaluated) == ["gates-without-bpda matrix51-own-check"] * 3
    assert cells(compared) == cells(evaluated)
