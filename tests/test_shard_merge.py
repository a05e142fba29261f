"""Merging the parts of a sharded evaluation (:func:`kwta_robust.shards.merge_records`) on synthetic records, in
milliseconds: per-sample lists concatenated in sample order and every aggregate recomputed from them (a unit's
robust accuracy, attacked and broken counts, the worst case), whatever order the parts come in; a range covered
by two parts, or by parts that ran different attack units, is refused. (End to end: ``tests/test_shards.py``.)"""

from __future__ import annotations

import copy

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.config import EvalConfig
from kwta_robust.errors import KwtaRobustError
from kwta_robust.results import EvalRecord
from kwta_robust.shards import merge_records

CFG = EvalConfig.from_dict({"dataset": "toy", "threats": [{"norm": "linf", "epsilons": [0.3]}],
                            "attacks": ["pgd", "fgsm"], "diagnostics": {"enabled": False}})
CLEAN = [1, 1, 0, 1, 1, 1, 1, 0, 1, 1]


def whole_record() -> EvalRecord:
    """Ten samples: pgd breaks 0 and 4, fgsm (cumulative, on pgd's survivors) breaks 6 and 8."""
    pgd = make_result("pgd", [0, 1, -2, 1, 0, 1, 1, -2, 1, 1], params={"steps": 10})
    fgsm = make_result("fgsm", [-1, 1, -2, 1, -1, 1, 0, -2, 0, 1], single_step=True, position=1, cumulative=True)
    pgd.margins = [0.5, -1.0, None, -2.0, 0.1, -0.3, -0.7, None, -0.2, -4.0]
    fgsm.margins = [None, -1.5, None, -2.5, None, -0.4, 0.2, None, 0.3, -3.0]
    return make_record([pgd, fgsm], clean_flags=CLEAN)


def part(record: EvalRecord, start: int, stop: int) -> EvalRecord:
    """The part a shard on the positions ``start:stop`` writes: its per-sample lists, its own aggregates."""
    piece = copy.deepcopy(record)
    piece.dataset["part"] = {"scope": "attacks", "start": start, "stop": stop}
    piece.clean_flags = record.clean_flags[start:stop]
    for r in piece.results:
        r.flags, r.margins = r.flags[start:stop], r.margins[start:stop]
        r.n_attacked, r.n_broken = sum(1 for f in r.flags if f >= 0), r.flags.count(0)
        r.robust = type(r.robust).of(r.flags.count(1), len(r.flags))
    for w in piece.worst_case:
        w.first_broken_by = w.first_broken_by[start:stop]
        w.robust = type(w.robust).of(w.first_broken_by.count(-1), len(w.first_broken_by))
    return piece


def test_the_merge_of_the_parts_is_the_whole_record_whatever_their_order() -> None:
    whole = whole_record()
    parts = [part(whole, 6, 10), part(whole, 0, 3), part(whole, 3, 6)]  # in the order the jobs finished
    merged = merge_records(whole, parts, CFG)
    assert merged.status == "complete" and "part" not in merged.dataset
    for got, want in zip(merged.results, whole.results, strict=True):
        assert (got.label, got.flags, got.margins) == (want.label, want.flags, want.margins)
        assert (got.robust, got.n_attacked, got.n_broken) == (want.robust, want.n_attacked, want.n_broken)
    assert [(r.n_attacked, r.n_broken, r.robust.correct) for r in merged.results] == [(8, 2, 6), (6, 2, 4)]
    (worst,), (expected,) = merged.worst_case, whole.worst_case
    assert worst.first_broken_by == expected.first_broken_by == [0, -1, -2, -1, 0, -1, 1, -2, 1, -1]
    assert worst.robust == expected.robust and worst.robust.correct == 4 and worst.robust.n == 10


def test_a_range_covered_twice_or_by_other_attack_units_is_refused() -> None:
    whole = whole_record()
    first, second = part(whole, 0, 5), part(whole, 5, 10)
    with pytest.raises(KwtaRobustError, match="Linf 0.3 is not in exactly one part of every sample range"):
        merge_records(whole, [first, copy.deepcopy(first), second], CFG)
    renamed = copy.deepcopy(second)
    renamed.results[1].label = "fgsm-2"
    with pytest.raises(KwtaRobustError, match="the shards ran different attack units"):
        merge_records(whole, [first, renamed], CFG)
