"""Lookups of one evaluation record built once per pass: the tables and the report look results up per cell, the
diagnostics, the budget check, a shard merge and a dry run per threat point, a run (resumed or not) per unit.

:class:`~kwta_robust.results.EvalRecord`'s own lookups (``result``, ``results_at``, ``worst``) scan its lists, and
a table calls them once per cell: rendering a record of N attack results took time quadratic in N (8,000 results:
``table`` 28 s, ``report`` 57 s). A :class:`RecordIndex` answers the same calls with the same values from dicts
built once. It is a snapshot: a pass builds it from the record it is about to read and drops it after (nothing
keeps an index on the record, so none can go stale). The one pass that changes the record as it goes, the runner's,
changes it through its index (:meth:`RecordIndex.put_result`, :meth:`RecordIndex.put_worst`), which stays current:
the record's own ``put_result`` rebuilt its list per unit, and a run of R units scanned it R times per lookup and
per put (1,000 units resumed with nothing to run: 2,000 scans of 1,000 results).
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
        self._worst: dict[tuple[str, float], WorstCase] = {}
        self._sorted: dict[tuple[str, float], list[AttackResult]] = {}
        self._index_results()
        self._index_worst()

    def _index_results(self) -> None:
        self._by_key, self._at, self._sorted = {}, {}, {}
        for r in self.record.results:
            self._by_key.setdefault(r.key, r)
            self._at.setdefault((r.norm, r.eps), []).append(r)

    def _index_worst(self) -> None:
        self._worst = {}
        for w in self.record.worst_case:
            self._worst.setdefault((w.norm, w.eps), w)

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

    def put_result(self, result: AttackResult) -> None:
        """:meth:`EvalRecord.put_result` on the record, the index kept current: a result of a new key is appended to
        the record's list (what that method's rebuilt list holds, in time independent of the number of results);
        one whose key the record holds goes through that method (a unit run again replaces the one kept) and the
        index is built again. A dict finds a key where the method's ``!=`` does (the same object or ``==``)."""
        if result.key in self._by_key:
            self.record.put_result(result)
            self._index_results()
            return
        self.record.results.append(result)
        self._by_key[result.key] = result
        self._at.setdefault((result.norm, result.eps), []).append(result)
        self._sorted.pop((result.norm, result.eps), None)

    def put_worst(self, worst: WorstCase) -> None:
        """:meth:`EvalRecord.put_worst` on the record, the index kept current (as :meth:`put_result`)."""
        if (worst.norm, worst.eps) in self._worst:
            self.record.put_worst(worst)
            self._index_worst()
            return
        self.record.worst_case.append(worst)
        self._worst[(worst.norm, worst.eps)] = worst


def indexed(records: Iterable[EvalRecord]) -> list[RecordIndex]:
    """A :class:`RecordIndex` of each of ``records``, in their order."""
    return [RecordIndex(rec) for rec in records]


def first_seen(items: Iterable[str]) -> list[str]:
    """``items`` in order, each once (a dict's keys: linear, where a list's ``not in`` was quadratic)."""
    return list(dict.fromkeys(items))


def attack_labels_of(records: Sequence[EvalRecord]) -> list[str]:
    """Attack labels in suite order over all records: each record's results sorted by position, each label once."""
    return first_seen(r.label for rec in records for r in sorted(rec.results, key=lambda r: r.position))
