""":func:`kwta_robust.record_checks.check_record`: boundaries the mutation-testing round found unguarded (a record
where every sample is right, an empty record, eps 0, an accuracy a little off, a list too long, a right verdict at
an error rate of 1, a margin beyond float range)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.record_checks import check_record
from kwta_robust.results import EvalRecord, RecordError, load_record, save_record
from test_record_check_edges import refused


def test_a_record_where_every_sample_is_right_passes() -> None:
    """``0 <= correct <= n``: n of n is a count, not a contradiction (clean 4/4, an attack that broke nothing)."""
    record = make_record([make_result("pgd", [1, 1, 1, 1])], clean_flags=[1, 1, 1, 1])
    assert (record.clean.correct, record.results[0].robust.correct, record.worst_case[0].robust.correct) == (4, 4, 4)
    check_record(record, "r.json")


def test_an_empty_record_passes_with_its_nan_accuracies(tmp_path: Path) -> None:
    """No samples: accuracy and interval are NaN (``null`` on disk), which is what 0/0 gives, not a contradiction."""
    record = make_record([], n=0, clean_flags=[])
    save_record(record, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["clean"] == {
        "n": 0, "correct": 0, "accuracy": None, "ci_low": None, "ci_high": None}
    check_record(load_record(tmp_path / "r.json"), "r.json")
    record.clean = dataclasses.replace(record.clean, accuracy=0.0)
    with pytest.raises(RecordError, match=r"^r\.json: clean: accuracy 0\.0 contradicts its counts 0/0 \(nan\)$"):
        check_record(record, "r.json")


def test_an_attack_at_eps_0_passes() -> None:
    """``eps >= 0``: a threat model of radius 0 (the clean inputs attacked) is valid."""
    record = make_record([make_result("pgd", [1, 0, -1, 1], eps=0.0)], clean_flags=[1, 1, 0, 1])
    assert record.results[0].eps == 0.0
    check_record(record, "r.json")
    assert refused(lambda r: setattr(r.results[0], "eps", -0.01)).endswith(
        "eps must be a finite number >= 0, got -0.01")


def test_an_accuracy_off_by_more_than_float_rounding_is_refused() -> None:
    """The stored accuracy is its counts up to 1e-6: 3/4 written as 0.7501 is a hand edit, 0.75 + 1e-9 rounding."""
    def accuracy(value: float):
        def change(r: EvalRecord) -> None:
            r.results[0].robust = dataclasses.replace(r.results[0].robust, accuracy=value)
        return change

    assert refused(accuracy(0.5001)).endswith("(pgd, Linf 0.3): robust: accuracy 0.5001 contradicts its counts 2/4 "
                                              "(0.5)")
    record = make_record([make_result("pgd", [1, 0, -1, 1])], clean_flags=[1, 1, 0, 1])
    accuracy(0.5 + 1e-9)(record)
    check_record(record, "r.json")


@pytest.mark.parametrize("field", ["clean_flags", "flags"])
def test_a_list_longer_than_the_samples_is_refused(field: str) -> None:
    def longer(r: EvalRecord) -> None:
        if field == "clean_flags":
            r.clean_flags.append(0)
        else:
            r.results[0].flags.append(-1)
    assert refused(longer).endswith(f"{field}: 5 entries for 4 samples")


def test_a_right_verdict_at_an_error_rate_of_1_is_refused() -> None:
    """A plurality verdict is right only below an error rate of 1 (some draw right): rate 1.0 with flag 1 is a
    contradiction, rate 0.5 with flag 0 is not (a tie counts as wrong)."""
    def rates(values: list):
        return lambda r: setattr(r, "clean_error_rates", values)

    assert refused(rates([0.0, 1.0, 0.5, 0.25])).endswith(
        "clean_error_rates: entry 1 (1) contradicts the verdict (right): a plurality verdict is wrong only at an "
        "error rate >= 0.5 and right only below 1")
    record = make_record([make_result("pgd", [1, 0, -1, 1])], clean_flags=[1, 1, 0, 1])
    record.clean_error_rates = [0.0, 0.75, 0.5, 0.25]
    record.results[0].error_rates = [0.25, 0.5, None, 0.0]
    check_record(record, "r.json")


def test_a_margin_beyond_float_range_is_one_line(tmp_path: Path) -> None:
    """A hand-edited record with an integer margin of 400 digits (valid JSON): before, reading it raised a raw
    ``OverflowError`` traceback (int too large to convert to float); now the one-line RecordError naming the
    entry, as for a margin that is text."""
    record = make_record([make_result("pgd", [1, 0, -1, 1])], clean_flags=[1, 1, 0, 1])
    save_record(record, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    for field in ("clean_margins", "margins", "error_rates"):
        changed = json.loads(json.dumps(data))
        values = [-1.0, 10 ** 400, None, -1.0]
        if field == "clean_margins":
            changed[field] = values
        else:
            changed["results"][0][field] = values
        (tmp_path / f"{field}.json").write_text(json.dumps(changed))
        with pytest.raises(RecordError) as info:
            load_record(tmp_path / f"{field}.json")
        where = field if field == "clean_margins" else f"results[0].{field}"
        assert str(info.value) == (f"{tmp_path / field}.json: {where}[1] must be a number, got "
                                   f"{str(10 ** 400)[:18]}...{str(10 ** 400)[-19:]}")  # record_values.shown
    data["results"][0]["margins"] = [-1.0, 1e308, None, -1.0]  # the largest floats are numbers
    (tmp_path / "r.json").write_text(json.dumps(data))
    check_record(load_record(tmp_path / "r.json"), "r.json")


def test_a_worst_case_that_names_an_attack_at_another_threat_model_is_refused() -> None:
    """The attacks a worst case names are results at ITS threat model, not any result of the record."""
    record = make_record([make_result("pgd", [1, 0, -1, 1]), make_result("fgsm", [1, 1, -1, 0], eps=0.5)],
                         clean_flags=[1, 1, 0, 1])
    w = record.worst_case[0]
    assert (w.eps, w.attacks) == (0.3, ["pgd"])
    w.attacks = ["pgd", "fgsm"]
    with pytest.raises(RecordError, match=r"worst_case\[0\] \(Linf 0\.3\): attack 'fgsm' is not among the results at "
                                          r"this threat model \(pgd\)$"):
        check_record(record, "r.json")


def test_a_boolean_position_and_an_unknown_status_are_refused() -> None:
    """JSON's ``true`` is no position (``bool`` is an ``int`` in Python); a status is complete or partial."""
    assert refused(lambda r: setattr(r.results[0], "position", True)).endswith(
        "results[0].position must be an integer >= 0, got True")
    assert refused(lambda r: setattr(r, "status", "running")) == (
        "r.json: status 'running' is not one of complete, partial")


def test_a_tied_margin_is_no_contradiction_and_the_first_real_one_is_named() -> None:
    """A margin of 0 (a tie) fits either verdict; the loop that names the contradiction passes over it."""
    assert refused(lambda r: setattr(r, "clean_margins", [-1.0, 0.0, 0.0, 0.5])).endswith(
        "clean_margins: entry 3 (0.5) contradicts clean_flags (1)")
    assert refused(lambda r: setattr(r.results[0], "margins", [0.0, 0.0, None, 0.25])).endswith(
        "(pgd, Linf 0.3): margins: entry 3 (0.25) contradicts flags (1)")


def test_a_missing_error_rate_of_an_attacked_sample_is_refused() -> None:
    """``null`` exactly where the sample was not attacked: pgd attacked sample 1 (flag 0), so its rate is a number."""
    assert refused(lambda r: setattr(r.results[0], "error_rates", [0.0, None, None, 0.25])).endswith(
        "(pgd, Linf 0.3): error_rates: entry 1 is None but the sample was attacked")
    assert refused(lambda r: setattr(r.results[0], "error_rates", [0.0, 0.5, 0.5, 0.25])).endswith(
        "(pgd, Linf 0.3): error_rates: entry 2 is 0.5 but the sample was not attacked")
