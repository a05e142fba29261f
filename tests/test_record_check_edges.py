"""Contradictions :func:`kwta_robust.record_checks.check_record` must name that the mutation-testing round found
unguarded: a count above n, an upper interval bound, an infinite eps, a boolean sample count."""

from __future__ import annotations

import dataclasses
from typing import Callable

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.record_checks import check_record
from kwta_robust.results import EvalRecord, RecordError


def refused(change: Callable[[EvalRecord], None]) -> str:
    """The one-line error of a consistent record after ``change``."""
    record = make_record([make_result("pgd", [1, 0, -1, 1])], clean_flags=[1, 1, 0, 1])
    check_record(record, "r.json")
    change(record)
    with pytest.raises(RecordError) as info:
        check_record(record, "r.json")
    return str(info.value)


def test_more_correct_samples_than_samples_are_refused() -> None:
    def five_of_four(r: EvalRecord) -> None:
        r.results[0].robust = dataclasses.replace(r.results[0].robust, correct=5, accuracy=1.25)
    assert refused(five_of_four).endswith("(pgd, Linf 0.3): robust: correct = 5 is outside [0, 4]")


def test_an_upper_interval_bound_that_is_not_wilsons_is_refused() -> None:
    def high(r: EvalRecord) -> None:
        r.clean = dataclasses.replace(r.clean, ci_high=1.0)
    assert "clean: 95% interval [" in refused(high) and "is not the Wilson interval of 3/4" in refused(high)


def test_an_infinite_eps_is_refused() -> None:
    def infinite(r: EvalRecord) -> None:
        r.results[0].eps = float("inf")
    assert "eps must be a finite number >= 0, got inf" in refused(infinite)


def test_a_boolean_sample_count_is_refused() -> None:
    def boolean(r: EvalRecord) -> None:
        r.clean = dataclasses.replace(r.clean, n=True)
    assert refused(boolean) == "r.json: clean.n must be an integer >= 0, got True"


def test_a_clean_count_that_is_not_its_flags_is_refused() -> None:
    def two(r: EvalRecord) -> None:
        r.clean = type(r.clean).of(2, 4)
    assert refused(two) == "r.json: clean.correct = 2 but clean_flags count 3"


def test_an_unknown_mode_and_a_short_index_list_are_refused() -> None:
    assert "mode 'parallel' is not one of cascade, independent" in refused(lambda r: setattr(r, "mode", "parallel"))
    assert "dataset.indices must list the 4 evaluated samples" in refused(
        lambda r: r.dataset.update(indices=[0, 1, 2]))


def test_a_sanity_result_is_checked_like_an_attack() -> None:
    def bad_sanity(r: EvalRecord) -> None:
        sanity = make_result("sanity-pgd", [0, 0, -1, 0], eps=1.0)
        sanity.n_broken = 2
        r.sanity = [sanity]
    assert "sanity[0] (sanity-pgd, Linf 1): n_broken = 2 but its flags count 3" in refused(bad_sanity)
