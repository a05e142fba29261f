"""The last record fields rendered or compared without a type check, each now one line naming the field through the
commands users run (``table``, ``report``, ``diff``): ``dataset.indices`` (the HTML report names the worst case's
survivors by them, resume compares them: a ``"44"``, ``true``, ``[44]``, ``-1``, an index past int64 or one listed
twice was shown as written or worded as "other samples"), ``dataset.n`` and ``num_classes``, the evaluation's seed
(``table --protocol`` printed a ``"12"``), a noise probe's seed, its ``num_samples`` (shown in the HTML report as
written), its per-level lists against its levels (paired with the wrong levels, or cut short without a word) and its
non-finite-input counts against the samples it probed. Before, each record below rendered (exit 0) and ``diff`` listed
it as a difference (exit 1).

And the one rendering of a bad value in these messages (:func:`kwta_robust.record_values.shown`): the loader's own
cut a long value at its end ("'xxx..."), the section checks' raised ``ValueError`` on an int past Python's 4,300-digit
int-to-str limit (a record built in Python) instead of the one-line :class:`RecordError`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from kwta_robust.cli import main
from kwta_robust.record_checks import check_record
from kwta_robust.results import EvalRecord, RecordError, load_record

QUICKSTART = Path(__file__).parent / "fixtures" / "quickstart"
INT64 = f"an integer in [0, {2 ** 63 - 1}]"
RESTORE = "restore the value the evaluation wrote"
LEVELS = 11  # the quickstart's numenta probe: levels 0.0, 0.05, ..., 0.5 on its n = 200 samples


def _at(path: tuple, value: Any) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value
    return change


def _noise(**result: Any) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data["noise"][0]["result"].update(result)
    return change


def _repeat(data: dict) -> None:
    data["dataset"]["indices"][1] = data["dataset"]["indices"][0]


def _unscored(**result: Any) -> Callable[[dict], None]:
    """``result`` with the scores left unmeasured (``null``), so that no score check names the change first."""
    return _noise(noise_score=None, noise_score_normalized=None, **result)


# (damage to the quickstart's kWTA record, the message after "error: PATH: ")
DAMAGES: dict[str, tuple[Callable[[dict], None], str]] = {
    "index as text": (_at(("dataset", "indices", 0), "44"), f"dataset.indices[0] must be {INT64}, got '44'"),
    "index true": (_at(("dataset", "indices", 0), True), f"dataset.indices[0] must be {INT64}, got True"),
    "index a list": (_at(("dataset", "indices", 0), [44]), f"dataset.indices[0] must be {INT64}, got [44]"),
    "index negative": (_at(("dataset", "indices", 2), -1), f"dataset.indices[2] must be {INT64}, got -1"),
    "index past int64": (_at(("dataset", "indices", 0), 2 ** 63), f"dataset.indices[0] must be {INT64}, got {2 ** 63}"),
    "index fractional": (_at(("dataset", "indices", 0), 44.5), f"dataset.indices[0] must be {INT64}, got 44.5"),
    "index twice": (_repeat, "dataset.indices[1] = 44 repeats dataset.indices[0]; each evaluated sample is listed "
                             "once: restore the indices the evaluation wrote"),
    "indices as text": (_at(("dataset", "indices"), "0-199"),
                        f"dataset.indices must be a list of integers in [0, {2 ** 63 - 1}] or null, got '0-199'"),
    "n as a float": (_at(("dataset", "n"), 200.0), "dataset.n must be an integer >= 0, got 200.0"),
    "classes as text": (_at(("dataset", "num_classes"), "10"),
                        "dataset.num_classes must be an integer >= 1 or null, got '10'"),
    "evaluation seed as text": (_at(("provenance", "seed"), "12"),
                                f"provenance.seed must be an integer in [0, {2 ** 63 - 1}] or null, got '12'"),
    "noise seed negative": (_at(("noise", 0, "seed"), -1),
                            f"noise[0].seed must be an integer in [0, {2 ** 63 - 1}], got -1"),
    "noise samples as text": (_noise(num_samples="200"),
                              "noise[0].result.num_samples must be an integer >= 0, got '200'"),
    "noise samples true": (_noise(num_samples=True), "noise[0].result.num_samples must be an integer >= 0, got True"),
    "noise samples not n": (_unscored(num_samples=100),
                            f"noise[0].result.num_samples = 100 but 200 samples were evaluated; {RESTORE}"),
    "noise accuracy short": (_unscored(accuracy=[0.9] * (LEVELS - 1)),
                             f"noise[0].result.accuracy holds 10 values for the probe's 11 noise levels (one per "
                             f"level); {RESTORE}"),
    "non-finite counts short": (_noise(non_finite_inputs=[0]),
                                f"noise[0].result.non_finite_inputs holds 1 value for the probe's 11 noise levels "
                                f"(one per level); {RESTORE}"),
    "non-finite count past n": (_noise(non_finite_inputs=[0, 0, 0, 201] + [0] * (LEVELS - 4)),
                                f"noise[0].result.non_finite_inputs[3] = 201 but 200 samples were probed; {RESTORE}"),
}


def _damaged(tmp_path: Path, damage: Callable[[dict], None]) -> Path:
    data = json.loads((QUICKSTART / "kwta.json").read_text(encoding="utf-8"))
    damage(data)
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["table", "report", "diff"])
@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_a_mistyped_field_is_one_line_in_table_report_and_diff(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               name: str, command: str) -> None:
    damage, message = DAMAGES[name]
    bad = _damaged(tmp_path, damage)
    out = tmp_path / "report.html"
    argv = {"table": ["table", str(bad)], "report": ["report", str(bad), "--out", str(out)],
            "diff": ["diff", str(QUICKSTART / "kwta.json"), str(bad)]}[command]
    assert main(argv) == 2
    printed, err = capsys.readouterr()
    assert err.splitlines() == [f"error: {bad}: {message}"]
    assert printed == "" and not out.exists()


def test_what_a_run_writes_still_renders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The quickstart's record with the per-level non-finite counts a current run writes (none, and one input at the
    top level) and no ``num_classes``: table, report and diff take it as before."""
    good = _damaged(tmp_path, lambda d: (d["noise"][0]["result"].update(non_finite_inputs=[0] * 10 + [200]),
                                         d["dataset"].pop("num_classes")))
    assert main(["table", str(good)]) == 0
    assert main(["report", str(good), "--out", str(tmp_path / "r.html")]) == 0
    assert main(["diff", str(QUICKSTART / "kwta.json"), str(good)]) == 1  # the two fields it changed
    assert capsys.readouterr().err == ""


HUGE = 10 ** 5000  # past Python's int-to-str limit: repr() raises ValueError


@pytest.mark.parametrize("value, shown", [(HUGE, "<an integer of 5,001 digits>"),
                                          (-HUGE - 7, "<a negative integer of 5,001 digits>"),
                                          ([1, HUGE], "[1, <an integer of 5,001 digits>]")],
                         ids=["huge", "negative", "in a list"])
def test_an_int_past_the_int_to_str_limit_is_named_by_its_digits(value: Any, shown: str) -> None:
    """A record built in Python: the section checks raised Python's ``ValueError`` (Exceeds the limit (4300 digits)
    for integer string conversion), the loader said "a int too long to show"."""
    record = load_record(QUICKSTART / "kwta.json")
    record.model["kwta_ratio"] = value
    with pytest.raises(RecordError) as caught:
        check_record(record, "r.json")
    assert str(caught.value) == f"r.json: model.kwta_ratio must be a finite number or null, got {shown}"
    data = json.loads((QUICKSTART / "kwta.json").read_text(encoding="utf-8"))
    data["config_hash"] = value
    with pytest.raises(RecordError) as caught:
        EvalRecord.from_dict(data, "r.json")
    assert str(caught.value) == f"r.json: config_hash must be a string, got {shown}"


DEEP = json.loads("[" * 500 + "]" * 500)


@pytest.mark.parametrize("value, shown", [("x" * 100_000, f"'{'x' * 17}...{'x' * 18}'"),
                                          (DEEP, "[[[[[[[...]]]]]]]"),
                                          (list(range(10_000)), "[0, 1, 2, 3, 4, 5, ...]")],
                         ids=["long text", "deep", "long list"])
def test_the_loader_shows_a_bad_value_as_the_section_checks_do(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               value: Any, shown: str) -> None:
    """One rendering: a long string cut in its middle, a list to its first 6 entries, nesting to 6 levels, whichever
    check names the field (the loader's ``clean.accuracy``, the sections' ``model.kwta_ratio``); the loader cut each at
    its 37th character before ("'xxx...", "[[[[...")."""
    for path, where, expected in ((("clean", "accuracy"), "clean.accuracy", "a number or null"),
                                  (("model", "kwta_ratio"), "model.kwta_ratio", "a finite number or null")):
        bad = _damaged(tmp_path, _at(path, value))
        assert main(["table", str(bad)]) == 2
        assert capsys.readouterr().err == f"error: {bad}: {where} must be {expected}, got {shown}\n"


LONG = "a" * 10_000 + "z" * 10_000
CUT = f"'{'a' * 17}...{'z' * 18}'"  # its repr cut to 40 characters, in the middle
DIGITS = str(10 ** 4299)  # the longest int Python reads from JSON (its int-to-str limit: 4,300 digits)
WHOLE_VALUES = {
    "schema version": (("schema_version",), 10 ** 4299, f"schema_version {DIGITS[:18]}...{DIGITS[-19:]} is not "
                       "supported (this version reads 1, 2, 3); it was written by a newer kwta-robust: upgrade to read "
                       "it"),
    "status": (("status",), LONG, f"status {CUT} is not one of complete, partial"),
    "eps": (("results", 0, "eps"), LONG, f"results[0] (pgd, Linf 0.1): eps must be a finite number >= 0, got {CUT}"),
}


@pytest.mark.parametrize("name", sorted(WHOLE_VALUES))
def test_a_long_value_the_record_checks_name_is_cut(tmp_path: Path, capsys: pytest.CaptureFixture, name: str) -> None:
    """These messages wrote the value's whole ``repr``: a line of 4,300 digits, or of 20,000 characters."""
    path, value, message = WHOLE_VALUES[name]
    bad = _damaged(tmp_path, _at(path, value))
    assert main(["table", str(bad)]) == 2
    assert capsys.readouterr().err == f"error: {bad}: {message}\n"
