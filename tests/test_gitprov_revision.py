"""The harness's git commit in a record's provenance (``provenance.versions.kwta_robust_git``): read from the files of
work trees built here by hand (loose ref, packed-refs, detached HEAD, a linked worktree, none), from a real clone
with ``git status`` for ``+dirty``, named by ``kwta-robust diff`` and warned about, not refused, on resume."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

import kwta_robust.git_revision as git_revision
from kwta_robust.api import evaluate_model
from kwta_robust.git_revision import git_commit, harness_revision, package_root
from kwta_robust.record_diff import cause
from kwta_robust.resume import note_resume
from eval_helpers import make_record

A, B = "a" * 40, "0123456789abcdef0123456789abcdef01234567"
CONFIG = {"dataset": "toy", "batch_size": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [{"attack": "fgsm"}], "diagnostics": {"enabled": False}}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_branch_is_read_from_its_loose_ref_or_packed_refs(tmp_path: Path) -> None:
    _write(tmp_path / "loose" / ".git" / "HEAD", "ref: refs/heads/main\n")
    _write(tmp_path / "loose" / ".git" / "refs" / "heads" / "main", A + "\n")
    assert git_commit(tmp_path / "loose") == A
    _write(tmp_path / "packed" / ".git" / "HEAD", "ref: refs/heads/dev\n")
    _write(tmp_path / "packed" / ".git" / "packed-refs", f"# pack-refs with: peeled fully-peeled sorted\n"
                                                         f"{A} refs/heads/main\n{B} refs/heads/dev\n^{A}\n")
    assert git_commit(tmp_path / "packed") == B


def test_a_detached_head_and_a_linked_worktree(tmp_path: Path) -> None:
    _write(tmp_path / "detached" / ".git" / "HEAD", B + "\n")
    assert git_commit(tmp_path / "detached") == B
    main_git = tmp_path / "main" / ".git"
    _write(main_git / "refs" / "heads" / "feature", A + "\n")  # the branch lives in the main git directory
    _write(main_git / "worktrees" / "wt" / "HEAD", "ref: refs/heads/feature\n")
    _write(main_git / "worktrees" / "wt" / "commondir", "../..\n")
    _write(tmp_path / "wt" / ".git", "gitdir: ../main/.git/worktrees/wt\n")  # relative to the work tree
    assert git_commit(tmp_path / "wt") == A


def test_no_work_tree_or_an_unborn_branch_has_no_commit(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None and harness_revision(tmp_path) is None  # a wheel install: field absent
    _write(tmp_path / ".git" / "HEAD", "ref: refs/heads/main\n")  # `git init`, nothing committed yet
    assert git_commit(tmp_path) is None and harness_revision(tmp_path) is None


def test_dirty_is_what_git_status_says_of_tracked_files_and_unchecked_without_git(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "code.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (tmp_path / "notes.txt").write_text("untracked\n")  # not code that ran: still clean
    assert harness_revision(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert harness_revision(tmp_path) == head + "+dirty"
    monkeypatch.setattr(git_revision.shutil, "which", lambda name: None)  # git not installed: the files only
    assert harness_revision(tmp_path) == head


def test_a_records_versions_name_the_commit_of_the_clone_it_ran_from(tmp_path: Path) -> None:
    root = package_root()
    assert (root / ".git").exists()  # CI and development run from a clone
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 3)).eval()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 1, 4, 5, generator=gen), torch.randint(0, 3, (4,), generator=gen)
    record = evaluate_model(model, CONFIG, x, y, out_path=tmp_path / "r.json", threads=1)
    found = record.provenance["versions"]["kwta_robust_git"]
    if shutil.which("git"):
        git = ["git", "-C", str(root)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout
        status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], check=True,
                                capture_output=True, text=True).stdout
        assert found == head.strip() + ("+dirty" if status.strip() else "")
    else:  # read HEAD by hand: detached, or a loose ref of a plain clone
        gdir = root / ".git"
        value = (gdir / "HEAD").read_text().strip()
        expected = value if not value.startswith("ref:") else (gdir / value[4:].strip()).read_text().strip()
        assert found == expected
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", found)


def test_diff_names_another_commit_as_its_own_cause() -> None:
    assert cause(f"provenance.versions.kwta_robust_git: '{A}' != '{B}+dirty'") == (
        "another commit of kwta-robust: its code may compute other numbers")
    assert cause("provenance.versions.torch: '2.1' != '2.2'") == (
        "another torch (or other package) version can compute other bits")


def test_resuming_under_another_commit_warns_and_keeps_the_first(caplog: pytest.LogCaptureFixture) -> None:
    old, fresh = make_record(n=2), make_record(n=2)
    old.provenance.update(versions={"kwta_robust_git": A}, command="a")
    fresh.provenance.update(versions={"kwta_robust_git": B}, started_at="t2", command="b")
    with caplog.at_level(logging.WARNING, logger="kwta_robust.resume"):
        note_resume(old, fresh, Path("rec.json"), "cpu", 1)
    assert f"rec.json: its finished units ran kwta-robust commit {A}, this run is commit {B}" in caplog.text
    assert old.provenance["versions"] == {"kwta_robust_git": A}
    caplog.clear()
    old.provenance["versions"] = {}  # a record written before the commit was recorded: nothing to compare
    with caplog.at_level(logging.WARNING, logger="kwta_robust.resume"):
        note_resume(old, fresh, Path("rec.json"), "cpu", 1)
    assert caplog.text == ""
