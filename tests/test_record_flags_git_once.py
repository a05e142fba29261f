"""``table`` (and ``report``, ``diff``) of records this commit wrote asked git for ``+dirty`` once per record
(``record_flags.current_revision``): N records, N ``git status`` runs. The commands now look the commit up once per
invocation (``record_flags.HarnessRevision``) and pass it to every record's check. git is not run here: its
``subprocess.run`` is replaced by a counter answering "no changes", and the commit read from files is a fixed one."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

import kwta_robust.git_revision as git_revision
from eval_helpers import make_record, make_result
from kwta_robust import __version__
from kwta_robust.cli import main
from kwta_robust.record_flags import HarnessRevision, current_revision
from kwta_robust.results import save_record

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def git_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """The commit read from files and ``git status`` runs, counted (git 'installed', the work tree clean)."""
    calls: dict[str, list] = {"status": [], "commit": []}

    def status(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        calls["status"].append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout="", stderr="")

    def commit(root: Path) -> str:
        calls["commit"].append(root)
        return COMMIT

    monkeypatch.setattr(git_revision.shutil, "which", lambda name: "/usr/bin/git")
    monkeypatch.setattr(git_revision.subprocess, "run", status)
    monkeypatch.setattr(git_revision, "git_commit", commit)
    return calls


def _records(folder: Path, count: int = 3) -> list[str]:
    """``count`` records written by this version at :data:`COMMIT` (so their flags are compared)."""
    paths = []
    for i in range(count):
        record = make_record([make_result("pgd", [1, 0, 1, 0])], label=f"m{i}")
        record.provenance = {"plugins": {}, "versions": {"kwta_robust": __version__, "kwta_robust_git": COMMIT}}
        save_record(record, folder / f"r{i}.json")
        paths.append(str(folder / f"r{i}.json"))
    return paths


@pytest.mark.parametrize("command", ["table", "report"])
def test_a_command_over_three_records_asks_git_once(command: str, tmp_path: Path, git_calls: dict[str, list],
                                                     capsys: pytest.CaptureFixture) -> None:
    paths = _records(tmp_path)
    out = ["--out", str(tmp_path / "r.md")] if command == "report" else []
    assert main([command, *paths, *out]) == 0
    assert len(git_calls["status"]) == 1  # was 3, one per record
    assert git_calls["status"][0][-3:] == ["status", "--porcelain", "--untracked-files=no"]
    assert len(git_calls["commit"]) <= 2  # the files read for the check and by harness_revision (was 6: twice each)


def test_diff_asks_git_once_for_both_records(tmp_path: Path, git_calls: dict[str, list],
                                             capsys: pytest.CaptureFixture) -> None:
    first, second = _records(tmp_path, 2)
    assert main(["diff", first, second]) == 1  # the labels differ
    assert len(git_calls["status"]) == 1 and len(git_calls["commit"]) <= 2


def test_git_is_not_asked_for_a_record_of_another_commit(git_calls: dict[str, list]) -> None:
    harness = HarnessRevision()
    assert current_revision("f" * 40, harness) is None
    assert current_revision(COMMIT + "+dirty", harness) == COMMIT  # the tree is clean: not this revision
    assert current_revision(COMMIT, harness) == COMMIT
    assert len(git_calls["status"]) == 1 and len(git_calls["commit"]) <= 2
    assert current_revision("f" * 40) is None and len(git_calls["status"]) == 1  # another commit: git not asked
