"""Lookups of one evaluation record built once per render: the tables and the report look results up per cell.

:class:`~kwta_robust.results.EvalRecord`'s own lookups (``result``, ``results_at``, ``worst``) scan its lists, and
a table calls them once per cell: rendering a record of N attack results took time quadratic in N (8,000 results:
``table`` 28 s, ``report`` 57 s). A :class:`RecordIndex` answers the same calls with the same values from dicts
built once. It is a snapshot: a renderer builds it from the record it is about to render and drops it after (a
record is mutated while an evaluation runs; nothing keeps an index on the record, so none can go stale).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from kwta_robust.results import AttackResult, EvalRecord, WorstCase


class RecordIndex:
    """The lookups of ``record`` as of now, each answering what the :class:`EvalRecord` method of the same name
    answers (the first match in list order; ``results_at`` sorted by position), in time independent of the number
    of results. Keys compare as the methods compare them (a tuple or dict key: the same object or ``==``)."""

    def __init__(self, record: EvalRecord) -> None:
        self.record = record
        self._by_key: dict[tuple[str, str, float], AttackResult] = {}
        self._at: dict[tuple[str, float], list[AttackResult]] = {}
        for r in record.results:
            self._by_key.setdefault(r.key, r)
            self._at.setdefault((r.norm, r.eps), []).append(r)
        self._worst: dict[tuple[str, float], WorstCase] = {}
        for w in record.worst_case:
            self._worst.setdefault((w.norm, w.eps), w)
        self._sorted: dict[tuple[str, float], list[AttackResult]] = {}

    @property
    def label(self) -> str:
        """The record's label (:attr:`EvalRecord.label`)."""
        return self.record.label

    def threat_points(self) -> list[tuple[str, float]]:
        """Distinct ``(norm, eps)`` pairs in order of appearance (:meth:`EvalRecord.threat_points`)."""
        return self.record.threat_points()

    def result(self, label: str, norm: str, eps: float) -> AttackResult | None:
        """The first result of ``label`` at ``(norm, eps)``, or ``None`` (:meth:`EvalRecord.result`)."""
        return self._by_key.get((label, norm, eps))

    def results_at(self, norm: str, eps: float) -> list[AttackResult]:
        """The results at ``(norm, eps)`` sorted by position (:meth:`EvalRecord.results_at`; a new list each call).
        The filter ``==`` of that method is applied to the group the dict found, so an epsilon that is not equal to
        itself (NaN) finds nothing there either."""
        point = (norm, eps)
        found = self._sorted.get(point)
        if found is None:
            group = self._at.get(point, [])
            found = sorted((r for r in group if r.norm == norm and r.eps == eps), key=lambda r: r.position)
            self._sorted[point] = found
        return list(found)

    def worst(self, norm: str, eps: float) -> WorstCase | None:
        """The first worst case at ``(norm, eps)``, or ``None`` (:meth:`EvalRecord.worst`)."""
        return self._worst.get((norm, eps))


def indexed(records: Iterable[EvalRecord]) -> list[RecordIndex]:
    """A :class:`RecordIndex` of each of ``records``, in their order."""
    return [RecordIndex(rec) for rec in records]


def first_seen(items: Iterable[str]) -> list[str]:
    """``items`` in order, each once (a dict's keys: linear, where a list's ``not in`` was quadratic)."""
    return list(dict.fromkeys(items))


def attack_labels_of(records: Sequence[EvalRecord]) -> list[str]:
    """Attack labels in suite order over all records: each record's results sorted by position, each label once."""
    return first_seen(r.label for rec in records for r in sorted(rec.results, key=lambda r: r.position))
