"""Mutation review (mut51) of :func:`kwta_robust.record_flags.written_here`: a record is this code's only where its
version and its commit equal this package's, ``+dirty`` alike (a clean record under a changed tree, or a changed
tree's record under a clean one, is not), read through the command's :class:`HarnessRevision` when one is given.
git is not run: the commit and the ``git status`` answer are stubbed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import kwta_robust.git_revision as git_revision
from kwta_robust import __version__
from kwta_robust.diagnostics import Thresholds
from kwta_robust.record_flags import HarnessRevision, comparable_thresholds, config_thresholds, written_here

COMMIT = "5a" * 20
OTHER = "0f" * 20


def record(commit: object, version: str = __version__) -> SimpleNamespace:
    return SimpleNamespace(provenance={"plugins": {}, "versions": {"kwta_robust": version, "kwta_robust_git": commit}})


@pytest.mark.parametrize("dirty", [False, True])
def test_written_here_needs_the_same_version_commit_and_dirt(monkeypatch: pytest.MonkeyPatch, dirty: bool) -> None:
    monkeypatch.setattr(git_revision, "git_commit", lambda root: COMMIT)
    monkeypatch.setattr(git_revision, "tracked_changes", lambda root: dirty)
    here = COMMIT + ("+dirty" if dirty else "")
    there = COMMIT + ("" if dirty else "+dirty")
    assert written_here(record(here)) is True
    assert written_here(record(there)) is False
    assert written_here(record(here, version="0.0.1")) is False
    assert written_here(record(OTHER)) is False and written_here(record(None)) is False


def test_written_here_reads_the_given_harness_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's :class:`HarnessRevision` is the one asked (here at another commit than git's files say)."""
    monkeypatch.setattr(git_revision, "git_commit", lambda root: COMMIT)
    monkeypatch.setattr(git_revision, "tracked_changes", lambda root: False)
    harness = HarnessRevision()
    harness.__dict__.update(commit=OTHER, revision=OTHER)  # what the command looked up once
    assert written_here(record(OTHER), harness) is True
    assert written_here(record(COMMIT), harness) is False
    assert written_here(record(COMMIT)) is True


def test_thresholds_only_where_diagnostics_ran_and_no_plugin_was_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """``diagnostics.enabled`` must be ``true`` and ``provenance.plugins`` must be present and empty ({}): a record
    without that field says nothing about plug-ins, so it is not recomputed either."""
    monkeypatch.setattr(git_revision, "git_commit", lambda root: COMMIT)
    monkeypatch.setattr(git_revision, "tracked_changes", lambda root: False)
    thresholds = vars(Thresholds()).copy()
    config = {"diagnostics": {"enabled": True, "thresholds": thresholds}}
    assert config_thresholds(config) == Thresholds()
    assert config_thresholds({"diagnostics": {"enabled": False, "thresholds": thresholds}}) is None
    assert config_thresholds({"diagnostics": {"thresholds": thresholds}}) is None
    rec = record(COMMIT)
    rec.status, rec.dataset, rec.config = "complete", {"name": "digits"}, config
    assert comparable_thresholds(rec) == Thresholds()
    for plugins in (None, {"attacks": ["mine"]}):
        rec.provenance = {**rec.provenance, "plugins": plugins}
        assert comparable_thresholds(rec) is None
    del rec.provenance["plugins"]
    assert comparable_thresholds(rec) is None
