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
raised with its transfer attacks among its results, where e.g. ``gates-without-bpda`` counts a transfer attack as a
gradient-free one and drops to a warning, or ``black-box-beats-white-box`` reads the transfer attack's kills, so a
compare cell lacked the critical mark the evaluate cell of the same model has. Every built-in check whose flags
differ between the record and its view (this code's checks, with the config's ``diagnostics.thresholds``) is
recomputed on the view; the other flags are kept as stored, and so are the budget check's re-run flags
(:mod:`kwta_robust.budget_check`: ``budget-checked``, ``budget-inconclusive``, a ``budget-still-lowering`` of
``source: rerun``: re-runs of attacks no record can repeat), a declared grid cell's and plug-in checks'. A record
with an attack this process has not registered (a plug-in a script registered) keeps every flag as stored: the
checks read whether a registered attack takes gradients, and would read it otherwise (:func:`unknown_attacks`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from attacks.base import REGISTRY
from kwta_robust.diagnostics import SEVERITIES, run_checks
from kwta_robust.record_flags import RERUN_SOURCE, config_thresholds, recomputed_codes
from kwta_robust.results import Accuracy, EvalRecord, Flag, WorstCase

#: ``first_broken_by`` of a sample no attack broke (attacks.cascade's value).
NEVER_BROKEN = -1


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


def suite(record: EvalRecord) -> tuple[EvalRecord, list[str]]:
    """``record`` as the matrices read it and the flag codes recomputed for it (:func:`suite_flags`): without
    transfer attacks, its worst case at each threat point over the config's attacks and its flags as evaluate raises
    them (module docstring); ``(record, [])`` where it ran none (every ``evaluate`` record). A shallow copy: nothing
    is changed."""
    transfer: dict[tuple[str, float], set[str]] = {}
    for r in record.results:
        if r.source is not None:
            transfer.setdefault((r.norm, r.eps), set()).add(r.label)
    if not transfer:
        return record, []
    view = dataclasses.replace(record, results=[r for r in record.results if r.source is None],
                               worst_case=[kept for w in record.worst_case
                                           if (kept := _suite_worst(w, transfer.get((w.norm, w.eps), set())))])
    flags, codes = suite_flags(record, view)
    return dataclasses.replace(view, diagnostics=flags), codes


def suite_view(record: EvalRecord) -> EvalRecord:
    """:func:`suite`'s view of ``record`` alone."""
    return suite(record)[0]


def _by_code(flags: list[Flag], code: str) -> list[Flag]:
    return [f for f in flags if f.code == code and f.evidence.get("source") != RERUN_SOURCE]


def suite_flags(record: EvalRecord, view: EvalRecord) -> tuple[list[Flag], list[str]]:
    """The diagnostics flags of ``view`` (``record`` without its transfer attacks) and the codes recomputed for it:
    those of the built-in checks that raise other flags on ``view`` than on ``record`` (with the thresholds of the
    record's config), their flags replaced by ``view``'s; every other flag as ``record`` stores it (module
    docstring), the whole list sorted by severity as evaluate sorts it. Nothing is recomputed where the record ran
    no diagnostics, its config holds no complete ``diagnostics.thresholds`` (another version's record) or an attack
    of its results is not registered here (:func:`unknown_attacks`)."""
    thresholds = config_thresholds(record.config)
    if thresholds is None or view is record or unknown_attacks(record):
        return list(record.diagnostics), []
    codes = recomputed_codes()
    before, after = run_checks(record, thresholds, codes), run_checks(view, thresholds, codes)
    changed = [c for c in codes if _by_code(before, c) != _by_code(after, c)]
    kept = [f for f in record.diagnostics if f.code not in changed or f.evidence.get("source") == RERUN_SOURCE]
    flags = kept + [f for f in after if f.code in changed]
    return sorted(flags, key=lambda f: SEVERITIES.index(f.severity)), changed


def unknown_attacks(record: EvalRecord) -> list[str]:
    """The attacks of ``record``'s results that this process has not registered (a plug-in registered by the script
    that ran the evaluation): the checks read how a registered attack takes gradients (``uses_gradient``: an EOT of
    one's own of kind ``adaptive`` uses them, an unregistered attack of that kind counts as gradient-free), so its
    flags are not recomputed without it (:mod:`kwta_robust.record_flags` compares no such record either)."""
    return sorted({r.attack for r in record.results if r.attack not in REGISTRY})


def _recomputed_text(record: EvalRecord, codes: Sequence[str]) -> str:
    """``; flags recomputed: a, b`` (``codes``: those :func:`suite_flags` recomputed for ``record``'s view), where its
    flags ran but cannot be recomputed that they are as stored, else nothing."""
    diagnostics = record.config.get("diagnostics") if isinstance(record.config, dict) else None
    if record.diagnostics and isinstance(diagnostics, dict) and diagnostics.get("enabled") is True \
            and config_thresholds(record.config) is None:
        return "; flags as stored: its config's diagnostics.thresholds are not this version's"
    if record.diagnostics and (unknown := unknown_attacks(record)):
        return f"; flags as stored: plug-in attack(s) {', '.join(unknown)} not registered here"
    return f"; flags recomputed: {', '.join(codes)}" if codes else ""


def transfer_note(records: Sequence[EvalRecord], suites: Sequence[tuple[EvalRecord, list[str]]],
                  names: Sequence[str]) -> list[str]:
    """The legend line naming the cells (``names``, one per record) whose transfer attacks the matrices left out,
    and the flags recomputed without them (``suites``: :func:`suite` of each record, computed once by the caller)."""
    left = [f"{name} {r.label} ({', '.join(transfer_labels(r))}{_recomputed_text(r, codes)})"
            for r, (_, codes), name in zip(records, suites, names) if transfer_labels(r)]
    if not left:
        return []
    return ["compare records: their transfer attacks (crafted on the other compared models) are left out of the "
            "matrices and each worst case is over the config's attacks only, as evaluate records it; so are the "
            "diagnostics flags of the checks that read them (recomputed on the records without their transfer "
            "attacks, with the config's thresholds; the budget check's flags from re-runs of attacks, which a record "
            "cannot repeat, and the other flags as stored): " + "; ".join(left)]
