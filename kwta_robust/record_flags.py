"""A record's diagnostics flags against the checks that raised them: a flag deleted or added by hand.

The runner (:func:`kwta_robust.evaluate.evaluate`, a sharded run's merge) stores the flags of
:func:`kwta_robust.diagnostics.run_checks` in ``record.diagnostics``. Every built-in check reads the record alone —
its results (an adaptive, black-box or single-step attack beating iterative PGD, a budget ladder within a suite: the
checklist of Carlini et al. 2019, §5-6), its stored model and layer probes (``probes``, ``detection``: BPDA acting on
no layer, selections outside every layer), its config (``sanity-not-run``) — with the thresholds of its config
(``diagnostics.thresholds``, under ``config_hash``), so the same code raises the same flags from the file.
:func:`check_flags` recomputes them and compares each flag's code and severity with the stored ones (messages are
not compared); a flag missing or extra is a :class:`~kwta_robust.results.RecordError` line naming it, as the other
contradictions of :func:`kwta_robust.record_checks.check_record`.

Only where the code is provably the same: the record's ``provenance.versions`` names this package version and this
commit of its git clone (``kwta_robust_git``, ``+dirty`` alike; the version string stays the same between two
commits, so a record without a commit — a wheel install's — is not compared). Nothing is said about (and nothing
refused of) a record of another version or commit, a partial record or a shard's part (no diagnostics ran), a run
with ``diagnostics.enabled: false``, a run that used plug-ins (``provenance.plugins``: their registrations shape some
checks, and the reader may lack them), the budget check's flags (re-runs of attacks: ``budget-checked``,
``budget-inconclusive`` and a ``budget-still-lowering`` whose evidence says ``source: rerun``), a sweep's grid-cell
flags and plug-in checks.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from typing import Any

from kwta_robust import __version__, git_revision
from kwta_robust.diagnostics import CHECKS, Thresholds, run_checks
from kwta_robust.errors import KwtaRobustError, first_line
from kwta_robust.results import EvalRecord, Flag, RecordError

#: The ``evidence.source`` of a flag the budget check raised from re-runs of attacks (:mod:`kwta_robust.budget_check`):
#: the record cannot reproduce it, though its code (``budget-still-lowering``) is also a check's over the results.
RERUN_SOURCE = "rerun"
_FIX = "restore the diagnostics the evaluation wrote or re-run it"


class HarnessRevision:
    """The commit this package is imported from, as a record's ``kwta_robust_git`` writes it
    (:func:`~kwta_robust.git_revision.harness_revision`), looked up at most once per object: a command makes one per
    invocation and passes it to the check of every record it reads, so ``table`` of N records reads the commit's
    files and asks git once, not N times. The commit is read from files first, and git asked about changes
    (``+dirty``) only where a record's commit is this one."""

    @functools.cached_property
    def commit(self) -> str | None:
        """The commit checked out where the package is imported from (``None`` outside a git work tree)."""
        return git_revision.git_commit(git_revision.package_root())

    @functools.cached_property
    def revision(self) -> str | None:
        """The commit with ``+dirty`` where git reports tracked files changed (git asked once; the commit is
        :attr:`commit`, not read from the files again)."""
        return git_revision.revision_of(git_revision.package_root(), self.commit)

    def matching(self, recorded: str) -> str | None:
        """This revision where it can equal ``recorded`` (the same commit), else ``None`` (git not asked)."""
        if self.commit is None or recorded.partition("+")[0] != self.commit:
            return None
        return self.revision


def current_revision(recorded: str, harness: HarnessRevision | None = None) -> str | None:
    """The commit this package is imported from, as a record's ``kwta_robust_git`` writes it, where it can equal
    ``recorded``; else ``None``. ``harness``: the command's :class:`HarnessRevision` (default: looked up afresh)."""
    return (HarnessRevision() if harness is None else harness).matching(recorded)


def config_thresholds(config: Any) -> Thresholds | None:
    """The thresholds the run's checks used (its config's ``diagnostics.thresholds``, every field of
    :class:`Thresholds` and no other), where its diagnostics ran; else ``None``."""
    diagnostics = config.get("diagnostics") if isinstance(config, dict) else None
    if not isinstance(diagnostics, dict) or diagnostics.get("enabled") is not True:
        return None
    stored = diagnostics.get("thresholds")
    names = {f.name for f in dataclasses.fields(Thresholds)}
    if not isinstance(stored, dict) or set(stored) != names:
        return None
    try:
        return Thresholds(**stored)
    except TypeError:
        return None


def comparable_thresholds(record: EvalRecord, harness: HarnessRevision | None = None) -> Thresholds | None:
    """The thresholds to recompute ``record``'s flags with where this package's code wrote them (the module
    docstring says when), else ``None``; ``harness``: the command's commit (:class:`HarnessRevision`)."""
    provenance = record.provenance
    if record.status != "complete" or "part" in record.dataset or provenance.get("plugins") != {} \
            or not written_here(record, harness):
        return None
    return config_thresholds(record.config)


def written_here(record: EvalRecord, harness: HarnessRevision | None = None) -> bool:
    """Whether this code wrote ``record``: its ``provenance.versions`` names this package version and this commit
    (``kwta_robust_git``, ``+dirty`` alike; the version string stays the same between two commits, whose checks may
    raise other flags from one record, so a record without a commit is not). ``harness``: the command's
    :class:`HarnessRevision` (git is asked only where the version and commit match)."""
    versions = record.provenance.get("versions")
    if not isinstance(versions, dict) or versions.get("kwta_robust") != __version__:
        return False
    recorded = versions.get("kwta_robust_git")
    return isinstance(recorded, str) and current_revision(recorded, harness) == recorded


def recomputed_codes() -> list[str]:
    """The codes of the built-in checks (plug-in checks may read anything)."""
    return [e.name for e in CHECKS.entries() if e.built_in]


def _counts(flags: list[Flag], codes: set[str]) -> Counter[tuple[str, str]]:
    return Counter((f.code, f.severity) for f in flags
                   if f.code in codes and f.evidence.get("source") != RERUN_SOURCE)


def check_flags(record: EvalRecord, source: str = "record", harness: HarnessRevision | None = None) -> None:
    """Raise :class:`RecordError` (one line starting with ``source``) where ``record.diagnostics`` lacks a flag that
    this package's checks raise from the record, or holds one they do not raise (a hand edit); records this code did
    not write pass unchecked (:func:`comparable_thresholds`, with the command's ``harness`` revision). Call it on a
    record whose results are consistent (:func:`kwta_robust.record_checks.check_record` does, last)."""
    thresholds = comparable_thresholds(record, harness)
    if thresholds is None:
        return
    codes = recomputed_codes()
    try:
        raised = run_checks(record, thresholds, codes)
    except KwtaRobustError as exc:  # the checks ran on this record when it was written
        raise RecordError(f"{source}: diagnostics: this version's checks fail on the record ({first_line(exc)}): "
                          f"the record was edited; {_FIX}") from None
    expected, stored = _counts(raised, set(codes)), _counts(record.diagnostics, set(codes))
    for code, severity in list(expected) + [key for key in stored if key not in expected]:
        want, have = expected[code, severity], stored[code, severity]
        if want == have:
            continue
        held = sorted({s for c, s in stored if c == code and s != severity})
        if want > have:
            what = f"the {severity} flag {code!r} is missing" if not have else \
                f"{have} {severity} {code!r} flag(s) where {want} are due"
            also = f" (the record holds it as {', '.join(held)})" if held else ""
            raise RecordError(f"{source}: diagnostics: {what}{also}: this version's checks raise it from the record's "
                              f"own contents, so the record was edited; {_FIX}")
        what = f"the {severity} flag {code!r} is not one" if not want else \
            f"{have} {severity} {code!r} flags where {want} are due: not what"
        raise RecordError(f"{source}: diagnostics: {what} this version's checks raise from the record's own contents, "
                          f"so the record was edited; {_FIX}")
