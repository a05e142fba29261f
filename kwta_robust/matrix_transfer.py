"""A ``compare`` record in a robustness matrix: its cell as ``evaluate`` would fill it (:mod:`kwta_robust.matrix`).

A record written by ``kwta-robust compare`` holds, after the config's attacks, one transfer attack per other model
of that comparison (Papernot et al. 2016; Athalye et al. 2018 use the ReLU twin's inputs to expose gradient masking),
and its stored worst case is the per-sample minimum over both. Neither is a property of the cell: the sources are
whichever models were compared with it. Beside ``evaluate`` records of the same config, every such cell was marked
not comparable (or the evaluate cells were: "worst case over pgd; the other cells' over pgd, transfer"), and the
transfer attacks got a matrix whose cells came from different source models under one label.

:func:`suite_view` gives the matrices the record as ``evaluate`` writes it for the same config: the transfer results
left out and the worst case taken over the config's attacks only, from the stored per-sample ``first_broken_by``
(``[n]`` ints: the index of the first attack, in cascade order, that broke sample ``i``; transfer attacks run after
every configured one, so that index says whether a configured attack broke it). The record itself (its file, its
numbers) is not changed; :func:`transfer_note` names what the matrices left out.

The view's diagnostics flags are those evaluate's record would hold too (:func:`suite_flags`): the record's were
raised with its transfer attacks among its results, where e.g. ``gates-without-bpda`` after black-box attacks alone
says the worst case rests on them and the transfer attacks (before misc53 it counted a transfer attack as a
gradient-free one and dropped to a warning, so a compare cell lacked the critical mark the evaluate cell of the same
model has). Every built-in check whose flags differ between the record and its view (this code's checks, with the
config's ``diagnostics.thresholds``) is recomputed on the view; the other flags are kept as stored, and so are the
budget check's re-run flags (:mod:`kwta_robust.budget_check`: ``budget-checked``, ``budget-inconclusive``, a
``budget-still-lowering`` of ``source: rerun``: re-runs of attacks no record can repeat), a declared grid cell's and
plug-in checks'. A ``black-box-beats-white-box`` flag a transfer attack raised is kept too
(:func:`transfer_flags`): that attack broke, on the cell's own model, samples its white-box attacks left robust
(Carlini et al. 2019, §5: gradient masking), so the cell's white-box numbers overstate its robustness whether or not
the matrices show the transfer attack; the legend names its source model.

The flags are recomputed only where this code wrote the record (:func:`kwta_robust.record_flags.written_here`: its
``provenance.versions`` names this package version and commit): another commit's checks may raise other flags from
the same results with the same thresholds, so a recomputed code would swap that commit's verdict for this one's, and
a code that commit's checks raised from the transfer attacks but this code's do not would stay unnoticed. Such a
record keeps every flag as stored (:func:`stored_reason` says why, in the legend), as does a record with an attack
this process has not registered (a plug-in a script registered): the checks read whether a registered attack takes
gradients, and would read it otherwise (:func:`unknown_attacks`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

from attacks.base import REGISTRY
from kwta_robust.diagnostics import CHECKS, SEVERITIES, run_checks
from kwta_robust.record_flags import (RERUN_SOURCE, HarnessRevision, config_thresholds, recomputed_codes,
                                      written_here)
from kwta_robust.results import Accuracy, EvalRecord, Flag, WorstCase

#: ``first_broken_by`` of a sample no attack broke (attacks.cascade's value).
NEVER_BROKEN = -1
#: What the legend calls a record with transfer attacks: ``compare``'s, or the API's ``evaluate_model`` given
#: ``transfer_sources`` (the record does not say which command wrote it).
TRANSFER_RECORDS = "records with transfer attacks"
#: The check whose flags a transfer attack raises on the model it attacked (kept in the view: :func:`transfer_flags`).
BLACK_BOX_CODE = "black-box-beats-white-box"


class Suite(NamedTuple):
    """:func:`suite` of a record: its ``view`` (the record as the matrices read it), the flag ``codes`` recomputed for
    it and, where its flags are kept as stored, why (``stored``, :func:`stored_reason`; else ``None``)."""

    view: EvalRecord
    codes: list[str]
    stored: str | None = None


def transfer_labels(record: EvalRecord) -> list[str]:
    """Labels of ``record``'s transfer attacks (results with a ``source`` model), in order, each once."""
    return list(dict.fromkeys(r.label for r in record.results if r.source is not None))


def _suite_worst(worst: WorstCase, transfer: set[str]) -> WorstCase | None:
    """``worst`` over its attacks but ``transfer`` (which run after the configured ones, so are its last ones);
    ``None`` where no other attack ran there (evaluate writes no worst case without attacks)."""
    kept = [a for a in worst.attacks if a not in transfer]
    if len(kept) == len(worst.attacks) or worst.attacks[:len(kept)] != kept:  # nothing to drop, or not a tail: as is
        return worst
    if not kept:
        return None
    first = [NEVER_BROKEN if v >= len(kept) else v for v in worst.first_broken_by]
    robust = Accuracy.of(sum(1 for v in first if v == NEVER_BROKEN), worst.robust.n)
    return dataclasses.replace(worst, attacks=kept, robust=robust, first_broken_by=first)


def suite(record: EvalRecord, harness: HarnessRevision | None = None) -> Suite:
    """``record`` as the matrices read it and the flag codes recomputed for it (:func:`suite_flags`): without
    transfer attacks, its worst case at each threat point over the config's attacks and its flags as evaluate raises
    them (module docstring); ``(record, [])`` where it ran none (every ``evaluate`` record). A shallow copy: nothing
    is changed. ``harness``: the command's :class:`~kwta_robust.record_flags.HarnessRevision` (default: afresh)."""
    transfer: dict[tuple[str, float], set[str]] = {}
    for r in record.results:
        if r.source is not None:
            transfer.setdefault((r.norm, r.eps), set()).add(r.label)
    if not transfer:
        return Suite(record, [])
    view = dataclasses.replace(record, results=[r for r in record.results if r.source is None],
                               worst_case=[kept for w in record.worst_case
                                           if (kept := _suite_worst(w, transfer.get((w.norm, w.eps), set())))])
    harness = HarnessRevision() if harness is None else harness  # git asked once for the reason and the flags
    flags, codes = suite_flags(record, view, harness)
    return Suite(dataclasses.replace(view, diagnostics=flags), codes, stored_reason(record, harness))


def record_suites(records: Sequence[EvalRecord]) -> list[Suite]:
    """:func:`suite` of each record, the commit this code runs from looked up once."""
    harness = HarnessRevision()
    return [suite(r, harness) for r in records]


def suite_view(record: EvalRecord) -> EvalRecord:
    """:func:`suite`'s view of ``record`` alone."""
    return suite(record).view


def _by_code(flags: list[Flag], code: str) -> list[Flag]:
    return [f for f in flags if f.code == code and f.evidence.get("source") != RERUN_SOURCE]


def transfer_flags(record: EvalRecord, flags: Sequence[Flag]) -> list[Flag]:
    """The ``black-box-beats-white-box`` flags among ``flags`` that ``record``'s transfer attacks raised: the attack
    its evidence names is a transfer attack (a result with a ``source``) at every threat point of its evidence."""
    points: dict[str, set[tuple[object, object]]] = {}
    for r in record.results:
        if r.source is not None:
            points.setdefault(r.label, set()).add((r.norm, r.eps))
    found = []
    for f in flags:
        at, where = points.get(str(f.evidence.get("attack"))), f.evidence.get("points")
        if f.code == BLACK_BOX_CODE and at and isinstance(where, list) and where and all(
                isinstance(p, dict) and (p.get("norm"), p.get("eps")) in at for p in where):
            found.append(f)
    return found


def suite_flags(record: EvalRecord, view: EvalRecord,
                harness: HarnessRevision | None = None) -> tuple[list[Flag], list[str]]:
    """The diagnostics flags of ``view`` (``record`` without its transfer attacks) and the codes recomputed for it:
    those of the built-in checks that raise other flags on ``view`` than on ``record`` (with the thresholds of the
    record's config; the ``black-box-beats-white-box`` flags of its transfer attacks kept, :func:`transfer_flags`),
    their flags replaced by ``view``'s; every other flag as ``record`` stores it (module docstring), the whole list
    in evaluate's order (:func:`evaluate_order`). Nothing is recomputed where :func:`stored_reason` gives a reason (no
    diagnostics ran, another version's or commit's record, an unregistered attack)."""
    thresholds = config_thresholds(record.config)
    if thresholds is None or view is record or stored_reason(record, harness) is not None:
        return list(record.diagnostics), []
    codes = recomputed_codes()
    before, after = run_checks(record, thresholds, codes), run_checks(view, thresholds, codes)
    raised, stored = transfer_flags(record, before), transfer_flags(record, record.diagnostics)
    changed = [c for c in codes if _by_code([f for f in before if f not in raised], c) != _by_code(after, c)]
    kept = [f for f in record.diagnostics
            if f.code not in changed or f.evidence.get("source") == RERUN_SOURCE or f in stored]
    return evaluate_order(kept + [f for f in after if f.code in changed]), changed


def evaluate_order(flags: Sequence[Flag]) -> list[Flag]:
    """``flags`` in the order evaluate stores them: by severity, then the checks' in their registration order (a
    plug-in check's after the built-in ones), then the budget check's re-run flags and any other, each group in the
    order given. The recomputed codes' flags were appended after the stored ones: a cell listed its critical codes in
    another order than the evaluate cell of the same model (a plug-in check's before ``gates-without-bpda``)."""
    ranks = {entry.name: i for i, entry in enumerate(CHECKS.entries())}
    return sorted(flags, key=lambda f: (SEVERITIES.index(f.severity), len(ranks) if f.evidence.get("source") ==
                                        RERUN_SOURCE else ranks.get(f.code, len(ranks))))


def stored_reason(record: EvalRecord, harness: HarnessRevision | None = None) -> str | None:
    """Why :func:`suite_flags` keeps ``record``'s flags as stored (legend text), or ``None`` where it recomputes
    them: its config holds no complete ``diagnostics.thresholds`` (no diagnostics ran, or another version's record),
    another version or commit wrote it (:func:`~kwta_robust.record_flags.written_here`: that commit's checks may
    raise other flags) or an attack of its results is not registered here (:func:`unknown_attacks`)."""
    if config_thresholds(record.config) is None:
        return "its config's diagnostics.thresholds are not this version's"
    if not written_here(record, harness):
        versions = record.provenance.get("versions")
        versions = versions if isinstance(versions, dict) else {}
        commit = versions.get("kwta_robust_git")
        wrote = f"kwta-robust {versions.get('kwta_robust', '?')}" + (
            f" at commit {str(commit)[:12]}" if commit else " without a commit")
        return f"written by {wrote} (provenance.versions), not this code, whose checks may raise other flags"
    if unknown := unknown_attacks(record):
        return f"plug-in attack(s) {', '.join(unknown)} not registered here"
    return None


def unknown_attacks(record: EvalRecord) -> list[str]:
    """The attacks of ``record``'s results that this process has not registered (a plug-in registered by the script
    that ran the evaluation): the checks read how a registered attack takes gradients (``uses_gradient``: an EOT of
    one's own of kind ``adaptive`` uses them, an unregistered attack of that kind counts as gradient-free), so its
    flags are not recomputed without it (:mod:`kwta_robust.record_flags` compares no such record either)."""
    return sorted({r.attack for r in record.results if r.attack not in REGISTRY})


def _recomputed_text(record: EvalRecord, found: Suite) -> str:
    """``; flags recomputed: a, b`` (``found``: :func:`suite` of ``record``), ``; flags as stored: why`` where its
    flags ran but are not recomputed, then the ``black-box-beats-white-box`` flags its view keeps from its transfer
    attacks (:func:`transfer_flags`) with their source models; else nothing."""
    diagnostics = record.config.get("diagnostics") if isinstance(record.config, dict) else None
    enabled = isinstance(diagnostics, dict) and diagnostics.get("enabled") is True
    text = f"; flags as stored: {found.stored}" if record.diagnostics and enabled and found.stored else \
        f"; flags recomputed: {', '.join(found.codes)}" if found.codes else ""
    sources = {r.label: r.source for r in record.results if r.source is not None}
    kept = list(dict.fromkeys(f"{f.evidence.get('attack')} (crafted on {sources.get(f.evidence.get('attack'))}) "
                              f"beat {f.evidence.get('reference')}"
                              for f in transfer_flags(record, found.view.diagnostics)))
    return text + (f"; {BLACK_BOX_CODE} kept: {', '.join(kept)}" if kept else "")


def transfer_note(records: Sequence[EvalRecord], suites: Sequence[Suite], names: Sequence[str]) -> list[str]:
    """The legend line naming the cells (``names``, one per record) whose transfer attacks the matrices left out,
    and the flags recomputed without them (``suites``: :func:`suite` of each record, computed once by the caller)."""
    left = [f"{name} {r.label} ({', '.join(transfer_labels(r))}{_recomputed_text(r, found)})"
            for r, found, name in zip(records, suites, names) if transfer_labels(r)]
    if not left:
        return []
    return [f"{TRANSFER_RECORDS}: "
            "their transfer attacks (crafted on other models: compare's on the other compared models, "
            "evaluate_model's on its transfer_sources) are left out of the matrices and each worst case is over the "
            "config's attacks only, as evaluate records it without transfer sources; so are the diagnostics flags of "
            "the checks that read them (recomputed on the records without their transfer attacks, with the config's "
            "thresholds; the budget check's flags from re-runs of attacks, which a record cannot repeat, and the "
            "other flags as stored), but for a black-box-beats-white-box flag a transfer attack raised, kept: it "
            "broke, on the cell's own model, samples its white-box attacks left robust (gradient masking: the cell's "
            "white-box numbers overstate its robustness); a record another commit wrote keeps its flags as stored "
            "(that commit's checks may raise others): " + "; ".join(left)]
