"""Record-loading fuzz: hand-edited numbers of the wrong type (a quoted ``"0.75"``, ``true``, a flag of ``0.5``),
a schema version of ``true``, interval settings the intervals contradict, an attack result lacking a field, and a
unit twice (two records merged: the table showed both rows, with their different query counts).

Before, the loader converted with ``int(...)``/``float(...)``: such a record rendered its table as if it held the
numbers (a string accuracy as a number, ``true`` as 1, a flag of 0.5 as 0) and the report named a ``50% wilson``
interval it never computed. Now each is one :class:`RecordError` line naming the file and the field path, and the
commands exit 2 with no file written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from eval_helpers import make_record, make_result
from test_record_sections import _set
from kwta_robust.cli import main
from kwta_robust.record_checks import check_record
from kwta_robust.results import NoiseResult, RecordError, load_record, save_record


def _base(tmp_path: Path) -> dict:
    """A valid record (3 samples, the third misclassified clean; one attack) as the JSON a run writes."""
    record = make_record([make_result("pgd", [1, 0, -1])], clean_flags=[1, 1, 0])
    record.clean_margins = [-2.0, -1.0, 0.5]
    record.results[0].margins = [-0.25, 0.75, None]
    save_record(record, tmp_path / "base.json")
    return json.loads((tmp_path / "base.json").read_text())


def _drop(path: tuple) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        for key in path[:-1]:
            data = data[key]
        del data[path[-1]]
    return change


#: As record_values.shown cuts it (reprlib: 40 characters; the loader's own rendering cut it as "1000...", 37 + 3).
BIG_SHOWN = f"{str(10 ** 400)[:18]}...{str(10 ** 400)[-19:]}"
# (mutation, the message after "<file>: ") -- each value here was read as a number (or a version) before
MUTANTS = {
    "clean accuracy as text": (_set(("clean", "accuracy"), "0.6666666666666666"),
                               "clean.accuracy must be a number or null, got '0.6666666666666666'"),
    "clean count as text": (_set(("clean", "correct"), "2"), "clean.correct must be an integer, got '2'"),
    "robust count true": (_set(("results", 0, "robust", "correct"), True),
                          "results[0].robust.correct must be an integer, got True"),
    "robust n as 3.0": (_set(("results", 0, "robust", "n"), 3.0), "results[0].robust.n must be an integer, got 3.0"),
    "worst ci as text": (_set(("worst_case", 0, "robust", "ci_low"), "0.06"),
                         "worst_case[0].robust.ci_low must be a number or null, got '0.06'"),
    "clean flag 0.5": (_set(("clean_flags", 2), 0.5), "clean_flags[2] must be an integer, got 0.5"),
    "clean flag true": (_set(("clean_flags", 0), True), "clean_flags[0] must be an integer, got True"),
    "margin as text": (_set(("results", 0, "margins", 1), "0.75"),
                       "results[0].margins[1] must be a number, got '0.75'"),
    "clean margin true": (_set(("clean_margins", 0), True), "clean_margins[0] must be a number, got True"),
    "max violation as text": (_set(("results", 0, "max_violation"), "0.0"),
                              "results[0].max_violation must be a number or null, got '0.0'"),
    "ci level as text": (_set(("ci_level",), "0.95"), "ci_level must be a number, got '0.95'"),
    "config hash null": (_set(("config_hash",), None), "config_hash must be a string, got None"),
    "samples digest a number": (_set(("dataset", "samples_sha256"), 5),
                                "dataset.samples_sha256 must be a string or null, got 5"),
    "a unit twice (a merge)": (lambda d: d["results"].append({**d["results"][0], "queries": 1}),
                               "results hold two units of 'pgd' at Linf 0.3; keep one of them"),
    "wall time past float range": (_set(("results", 0, "wall_time_s"), 10 ** 400),
                                   f"results[0].wall_time_s must be a number or null, got {BIG_SHOWN}"),
    "queries past float range": (_set(("results", 0, "queries"), 10 ** 400),
                                 f"results[0].queries must be an integer >= 0 or null, got {BIG_SHOWN}"),
    "violations negative": (_set(("results", 0, "violations"), -1),
                            "results[0].violations must be an integer >= 0, got -1"),
    "schema version true": (_set(("schema_version",), True),
                            "schema_version True is not supported (this version reads 1, 2, 3)"),
    "result lacks robust": (_drop(("results", 0, "robust")),
                            "results[0] lacks field 'robust'; restore it from the original record (or re-run the "
                            "evaluation)"),
    "interval level 0.5": (_set(("ci_level",), 0.5), "ci_method 'wilson' / ci_level 0.5 is not 'wilson' / 0.95, the "
                           "interval every accuracy is checked against; set them back"),
}


def _mutant(tmp_path: Path, name: str) -> tuple[Path, str]:
    data = _base(tmp_path)
    change, message = MUTANTS[name]
    change(data)
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(data, indent=1))
    return path, f"{path}: {message}"


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_the_python_api_refuses_a_mistyped_field_by_its_path(tmp_path: Path, name: str) -> None:
    path, expected = _mutant(tmp_path, name)
    with pytest.raises(RecordError) as info:
        check_record(load_record(path), str(path))
    assert str(info.value) == expected


@pytest.mark.parametrize("name", ["clean accuracy as text", "clean flag 0.5", "margin as text", "interval level 0.5",
                                  "a unit twice (a merge)", "wall time past float range",
                                  "queries past float range"])
@pytest.mark.parametrize("command", ["html", "md", "table"])
def test_report_and_table_refuse_it_in_one_line_and_write_nothing(tmp_path: Path, capsys, name: str,
                                                                 command: str) -> None:
    path, expected = _mutant(tmp_path, name)
    out = tmp_path / f"x.{command}"
    argv = ["table", str(path), "--out", str(tmp_path / "x.md")] if command == "table" else [
        "report", str(path), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {expected}" and "Traceback" not in err
    assert not (tmp_path / "x.md").exists() and not out.exists()


def test_the_unmutated_record_still_loads_with_its_numbers(tmp_path: Path) -> None:
    """The strict reading changes nothing for what a run writes: counts, margins and NaN ("not measured")."""
    data = _base(tmp_path)
    data["results"][0]["wall_time_s"] = None
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(data))
    record = load_record(path)
    check_record(record, str(path))
    assert (record.clean.correct, record.clean.n, record.results[0].robust.correct) == (2, 3, 1)
    assert record.clean_margins == [-2.0, -1.0, 0.5] and record.results[0].margins == [-0.25, 0.75, None]
    assert record.results[0].wall_time_s != record.results[0].wall_time_s  # NaN


RESTORE = "restore the value the evaluation wrote"


def _noisy(tmp_path: Path, **result: Any) -> Path:
    """A valid record of 4 samples with a noise probe of 2 levels (accuracy 1 and 0.5: score 6 of 8), ``result``
    changed."""
    record = make_record([make_result("pgd", [1, 0, 1, 1])])
    scores = {"kind": "numenta", "num_samples": 4, "accuracy": [1.0, 0.5], "total_correct": 6, "noise_score": 6.0,
              "noise_score_normalized": 0.75}
    record.noise = [NoiseResult("numenta", [0.0, 0.1], 1, 0, {**scores, **result}, 0.5)]
    save_record(record, tmp_path / "noisy.json")
    return tmp_path / "noisy.json"


@pytest.mark.parametrize(("change", "message"), [
    ({"noise_score": -6.0}, "noise[0].result.noise_score = -6.0 but its accuracy per level over 4 samples gives 6; "
                            f"{RESTORE}"),
    ({"noise_score_normalized": 0.5},
     f"noise[0].result.noise_score_normalized = 0.5 but its accuracy per level over 4 samples gives 0.75; {RESTORE}"),
    ({"num_samples": 10 ** 400}, "noise[0].result.num_samples must be the number of samples probed, got "
                                 f"{str(10 ** 400)[:18]}...{str(10 ** 400)[-19:]}"),
])
def test_a_noise_score_its_accuracies_contradict_is_refused(tmp_path: Path, capsys, change: dict, message: str) -> None:
    """The table's noise-score column printed a hand-edited score (-6 here) as written."""
    assert main(["table", str(_noisy(tmp_path))]) == 0
    assert "|           6 |" in capsys.readouterr().out  # the valid record's score, as the table prints it
    path = _noisy(tmp_path, **change)
    assert main(["table", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}: {message}\n"  # one line, no traceback (an int past float range raised one)
