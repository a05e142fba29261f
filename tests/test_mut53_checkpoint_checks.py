"""Mutation review of kwta_robust/checkpoint_checks.py (``checkpoint-accuracy-differs``): the 3-point margin on
both sides of the measured 95% interval, which entries read as a claimed clean accuracy (a fraction in [0, 1], a
percentage in (1, 100]; not an error rate, a flag or a number above 100) and what the flag names (only the far
claims, the split). On a synthetic record: 50 of 100 clean, interval 40.4–59.6%."""

from __future__ import annotations

import pytest

from eval_helpers import make_record
from kwta_robust.checkpoint_checks import ACCURACY_POINTS, CHECKPOINT_ACCURACY, check_checkpoint_accuracy, \
    claimed_accuracies
from kwta_robust.diagnostics_base import Thresholds
from kwta_robust.results import EvalRecord, Flag


def _record(meta: dict, correct: int = 50, n: int = 100) -> EvalRecord:
    record = make_record(n=n, clean_flags=[1] * correct + [0] * (n - correct))
    record.model["training"] = {"checkpoint_meta": meta}
    return record


def _flags(meta: dict, **kw: int) -> list[Flag]:
    return check_checkpoint_accuracy(_record(meta, **kw), Thresholds())


def test_the_margin_is_three_points_outside_the_interval_on_both_sides() -> None:
    clean = _record({}).clean
    assert ACCURACY_POINTS == 0.03
    inside_high, outside_high = clean.ci_high + 0.025, clean.ci_high + 0.035
    inside_low, outside_low = clean.ci_low - 0.025, clean.ci_low - 0.035
    for claim in (clean.ci_low, clean.accuracy, clean.ci_high, inside_high, inside_low):
        assert _flags({"acc": claim}) == [], claim
    for claim in (outside_high, outside_low):
        (flag,) = _flags({"acc": claim})
        assert (flag.code, flag.severity) == (CHECKPOINT_ACCURACY, "info")
        assert flag.evidence["claimed_fraction"] == {"acc": claim} and flag.evidence["points"] == 0.03


def test_which_entries_are_read_as_a_claimed_clean_accuracy() -> None:
    assert claimed_accuracies({"acc": 0, "best_acc": 1, "top1": 91.2, "test_acc": 100, "acc1": 0.5}) == {
        "acc": 0.0, "best_acc": 1.0, "top1": pytest.approx(0.912), "test_acc": 1.0, "acc1": 0.5}
    for meta in ({"acc": 150}, {"acc": -1}, {"acc": True}, {"acc": float("nan")}, {"top1_err": 8.8},
                 {"acc_err": 0.1}, {"epoch": 80}):
        assert claimed_accuracies(meta) == {}, meta
    assert _flags({"acc": 0}) != [] and _flags({"acc": True}) == [] and _flags({"top1_err": 91.2}) == []


def test_the_flag_names_the_far_claims_only_and_the_split() -> None:
    (flag,) = _flags({"acc": 91.2, "best_acc": 50.0})
    assert flag.message.startswith("the checkpoint says acc 91.2; measured clean 50.0 (40.4–59.6) on these 100 test "
                                   "samples: "), flag.message
    assert flag.evidence["claimed"] == {"acc": 91.2} and flag.evidence["n"] == 100

