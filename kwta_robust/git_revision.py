"""Which commit of the harness ran: the version string stays the same between two commits of a git clone.

Researchers install kwta-robust editable from a clone (``pip install -e .``), so a record's
``provenance.versions["kwta_robust"]`` cannot tell two checkouts apart. :func:`harness_revision` reads the commit of
the git work tree the package is imported from (``HEAD`` followed to its ref, a loose ref file or ``packed-refs``;
a detached ``HEAD``; a linked worktree, whose ``.git`` is a file naming its git directory) from the files alone, so
git need not be installed. Where git is installed it also asks ``git status`` whether tracked files differ from the
commit (``+dirty``); without git that is not checked. A package not in a git work tree (a wheel install) has none.
Only the folder holding the package is looked at, never its parents: a wheel in a virtual environment kept inside
some other clone is not that clone's code.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

#: An object name: SHA-1 (40 hex digits) or SHA-256 (64).
_OBJECT_NAME = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
#: How long ``git status`` may take before the work tree is left unchecked (it takes milliseconds on this clone).
STATUS_TIMEOUT_S = 10.0
#: Symbolic refs followed before giving up (a ref naming a ref ...).
_MAX_HOPS = 5


def package_root() -> Path:
    """The folder holding the ``kwta_robust`` package (a clone's root when it is imported from one)."""
    return Path(__file__).resolve().parent.parent


def git_dir(root: Path) -> Path | None:
    """The git directory of the work tree ``root``: ``root/.git``, or the folder a linked worktree's ``.git``
    file names (``gitdir: PATH``, relative to ``root`` unless absolute); ``None`` where ``root`` has neither."""
    dot_git = Path(root) / ".git"
    if dot_git.is_dir():
        return dot_git
    if not dot_git.is_file():
        return None
    text = dot_git.read_text(encoding="utf-8").strip()
    if not text.startswith("gitdir:"):
        return None
    found = Path(text[len("gitdir:"):].strip())
    found = found if found.is_absolute() else Path(root) / found
    return found if found.is_dir() else None


def git_commit(root: Path) -> str | None:
    """The commit checked out in the git work tree ``root``, read from its files (no git needed), or ``None``
    (not a work tree, an unborn branch, an unreadable or unexpected file)."""
    try:
        gdir = git_dir(root)
        if gdir is None:
            return None
        common = gdir / "commondir"  # a linked worktree keeps its branches in the main git directory
        common_dir = gdir / common.read_text(encoding="utf-8").strip() if common.is_file() else gdir
        value = (gdir / "HEAD").read_text(encoding="utf-8").strip()
        for _ in range(_MAX_HOPS):
            if _OBJECT_NAME.fullmatch(value):
                return value
            if not value.startswith("ref:"):
                return None
            value = _read_ref(value[len("ref:"):].strip(), gdir, common_dir)
            if value is None:
                return None
    except (OSError, UnicodeDecodeError) as exc:
        logger.debug("no git commit read under %s: %s", root, exc)
    return None


def _read_ref(name: str, gdir: Path, common_dir: Path) -> str | None:
    """The content of the ref ``name``: its loose file (the worktree's own, then the shared one) or its line in
    ``packed-refs``; ``None`` where it has neither."""
    if ".." in Path(name).parts:
        return None
    for folder in (gdir, common_dir):
        loose = folder / name
        if loose.is_file():
            return loose.read_text(encoding="utf-8").strip()
    packed = common_dir / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            commit, _, ref = line.partition(" ")
            if ref.strip() == name and not line.startswith(("#", "^")):
                return commit.strip()
    return None


def tracked_changes(root: Path) -> bool | None:
    """Whether tracked files of the work tree ``root`` differ from its commit, as ``git status --porcelain
    --untracked-files=no`` says (untracked files are not code that ran); ``None`` where git is not installed,
    fails or takes longer than :data:`STATUS_TIMEOUT_S`. ``GIT_*`` variables are dropped so that they cannot
    point git at another repository, and no optional lock is taken (another git command may be running)."""
    git = shutil.which("git")
    if git is None:
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        done = subprocess.run([git, "--no-optional-locks", "-C", str(root), "status", "--porcelain",
                               "--untracked-files=no"], capture_output=True, text=True, timeout=STATUS_TIMEOUT_S,
                              env=env, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("git status failed under %s: %s", root, exc)
        return None
    if done.returncode != 0:
        logger.debug("git status under %s exited %d: %s", root, done.returncode, done.stderr.strip())
        return None
    return bool(done.stdout.strip())


def harness_revision(root: Path | None = None) -> str | None:
    """The commit of the work tree ``root`` (default: the one the package is imported from), with ``+dirty``
    where git reports tracked files changed since it; ``None`` where ``root`` is no git work tree."""
    root = package_root() if root is None else Path(root)
    return revision_of(root, git_commit(root))


def revision_of(root: Path, commit: str | None) -> str | None:
    """``commit`` (:func:`git_commit` of the work tree ``root``, read by the caller) with ``+dirty`` where git reports
    tracked files of ``root`` changed since it (:func:`tracked_changes`); ``None`` where ``commit`` is."""
    if commit is None:
        return None
    return commit + "+dirty" if tracked_changes(root) else commit
