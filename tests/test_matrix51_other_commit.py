"""A compare record another commit wrote keeps its flags as stored in the matrices, and the legend says why.

The matrices recompute, with this code's checks, the flags a compare record's transfer attacks change
(:func:`kwta_robust.matrix_transfer.suite_flags`) wherever its config's thresholds are this version's. Another commit
with the same thresholds may have other rules (the checks change between commits; the version string does not), so a
recomputed code swapped that commit's stored verdict for this one's — here a critical ``eps-not-monotonic`` of pgd
vanished, the legend saying only "flags recomputed". Now only a record whose ``provenance.versions`` names
this version and commit (:func:`kwta_robust.record_flags.written_here`) is recomputed."""

from __future__ import annotations

import pytest

import kwta_robust.git_revision as git_revision
from eval_helpers import make_record, make_result
from kwta_robust import __version__
from kwta_robust.diagnostics import Thresholds, run_checks
from kwta_robust.matrix import build_matrices, legend
from kwta_robust.matrix_transfer import suite_view
from kwta_robust.results import EvalRecord, Flag

COMMIT = "51" * 20
OTHER = "f" * 40
CODE = "eps-not-monotonic"


@pytest.fixture(autouse=True)
def this_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(git_revision, "git_commit", lambda root: COMMIT)
    monkeypatch.setattr(git_revision, "tracked_changes", lambda root: False)


def compare_record(commit: str | None) -> EvalRecord:
    """pgd at two eps, then a transfer attack whose robust accuracy (and the worst case's) rises with eps (this code
    raises ``eps-not-monotonic`` for both, flags the view without it lacks), written at ``commit``; stored beside this
    code's flags, a critical ``eps-not-monotonic`` of pgd, as another commit's rule raised it."""
    results = []
    for eps, transfer in ((0.1, [0, 0, 0, 0, 1, 1, -1, -1]), (0.2, [0, 1, 1, 1, -1, -1, -1, -1])):
        pgd = make_result("pgd", [1] * 6 + [0] * 2 if eps == 0.1 else [1] * 4 + [0] * 4, eps=eps)
        moved = make_result("transfer", transfer, eps=eps, kind="transfer", position=1, cumulative=True)
        moved.source = "relu"
        results += [pgd, moved]
    record = make_record(results)
    record.model.update({"kwta_ratio": 0.1})
    record.config = {"seed": 0, "diagnostics": {"enabled": True, "thresholds": vars(Thresholds()).copy()}}
    versions = {"kwta_robust": __version__, **({"kwta_robust_git": commit} if commit else {})}
    record.provenance = {"plugins": {}, "versions": versions}
    theirs = Flag(CODE, "critical", "pgd (linf): another commit's rule", {"attack": "pgd", "norm": "linf"})
    record.diagnostics = [theirs, *run_checks(record, Thresholds())]
    return record


def test_another_commits_record_keeps_its_flags_and_the_legend_says_so() -> None:
    ours = compare_record(COMMIT)
    assert [f.evidence["attack"] for f in run_checks(ours, Thresholds()) if f.code == CODE] == ["transfer",
                                                                                                 "worst case"]
    assert CODE not in {f.code for f in suite_view(ours).diagnostics}  # this code's record: recomputed

    for commit, wrote in ((OTHER, f"kwta-robust {__version__} at commit {OTHER[:12]}"),
                          (None, f"kwta-robust {__version__} without a commit")):  # a wheel install's record
        record = compare_record(commit)
        assert suite_view(record).diagnostics == record.diagnostics
        assert all(CODE in m.flags[(0.1, 0.0)] for m in build_matrices([record]))  # its critical mark
        line = next(n for n in legend(build_matrices([record])) if n.startswith("records with transfer attacks:"))
        assert (f"model (transfer; flags as stored: written by {wrote} (provenance.versions), not this code, whose "
                "checks may raise other flags") in line
