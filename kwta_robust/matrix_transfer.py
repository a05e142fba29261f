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
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from kwta_robust.results import Accuracy, EvalRecord, WorstCase

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


def suite_view(record: EvalRecord) -> EvalRecord:
    """``record`` as the matrices read it: without transfer attacks, its worst case at each threat point over the
    config's attacks (module docstring); ``record`` itself where it ran none (every ``evaluate`` record). A shallow
    copy: nothing is changed."""
    transfer: dict[tuple[str, float], set[str]] = {}
    for r in record.results:
        if r.source is not None:
            transfer.setdefault((r.norm, r.eps), set()).add(r.label)
    if not transfer:
        return record
    return dataclasses.replace(record, results=[r for r in record.results if r.source is None],
                               worst_case=[kept for w in record.worst_case
                                           if (kept := _suite_worst(w, transfer.get((w.norm, w.eps), set())))])


def transfer_note(records: Sequence[EvalRecord], names: Sequence[str]) -> list[str]:
    """The legend line naming the cells (``names``, one per record) whose transfer attacks the matrices left out."""
    left = [f"{name} {r.label} ({', '.join(transfer_labels(r))})" for r, name in zip(records, names)
            if transfer_labels(r)]
    if not left:
        return []
    return ["compare records: their transfer attacks (crafted on the other compared models) are left out of the "
            "matrices and each worst case is over the config's attacks only, as evaluate records it: "
            + "; ".join(left)]
