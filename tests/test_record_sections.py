"""A hand-edited or damaged record's descriptive sections (:mod:`kwta_robust.record_sections`): one line naming the
field, never a ``TypeError`` from deep inside a renderer. Each case below crashed ``table`` (some format),
``report`` or the record check itself before: found by rendering every record with one field changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from html_helpers import QUICKSTART
from kwta_robust.cli import main
from kwta_robust.html_sweep import load_sweep
from kwta_robust.numbers import percent_text
from kwta_robust.record_checks import check_record
from kwta_robust.results import RecordError, load_record


def _set(path: tuple, value: Any) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value
    return change


def damaged(tmp_path: Path, change: Callable[[dict], None], name: str = "kwta.json") -> Path:
    data = json.loads((QUICKSTART / name).read_text())
    change(data)
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(data))
    return path


SPARSITY = ("model.weight_sparsity must be a number in [0, 1] or an object whose overall is one (and layers an object "
            "of such fractions)")
CASES = [
    (("model", "num_kwta_layers"), "x", "model.num_kwta_layers must be an integer >= 0 or null, got 'x'"),
    (("model", "num_kwta_layers"), True, "model.num_kwta_layers must be an integer >= 0 or null, got True"),
    (("model", "kwta_ratio"), [], "model.kwta_ratio must be a finite number or null, got []"),
    (("model", "weight_sparsity", "overall"), 2, f"{SPARSITY}, got {{"),
    (("model", "weight_sparsity", "layers"), "x", f"{SPARSITY}, got {{"),
    (("dataset", "name"), [], "dataset.name must be a string or null, got []"),
    (("detection", "layers"), None, "detection.layers must be a list of JSON objects, got None"),
    (("detection", "layers", 0, "kinds"), [1, "a"], "detection.layers[0].kinds[0] must be a string, got 1"),
    (("diagnostics", 0, "code"), None, "diagnostics[0].code must be a string, got None"),
    (("noise", 0, "kind"), None, "noise[0].kind must be a string, got None"),
    (("noise", 0, "levels"), None, "noise[0].levels must be a list of finite numbers, got None"),
    (("noise", 0, "levels", 1), "x", "noise[0].levels[1] must be a finite number, got 'x'"),
    (("noise", 0, "result"), None, "noise[0].result must be a JSON object, got None"),
    (("noise", 0, "result", "params"), "x", "noise[0].result.params must be a JSON object or null, got 'x'"),
    (("noise", 0, "result", "accuracy", 3), None, "noise[0].result.accuracy[3] must be a number in [0, 1], got None"),
    (("noise", 0, "result", "noise_score"), [], "noise[0].result.noise_score must be a finite number or null, got []"),
    (("provenance", "randomness"), 3, "provenance.randomness must be a JSON object or null, got 3"),
    (("provenance", "randomness", "draws"), None, "provenance.randomness.draws must be an integer >= 1, got None"),
    (("results", 0, "norm"), [], "results[0].norm must be a string, got []"),
    (("results", 0, "single_step"), "yes", "results[0].single_step must be true or false, got 'yes'"),
    (("results", 1, "params"), [], "results[1].params must be a JSON object, got []"),
    (("results", 1, "source"), 3, "results[1].source must be a string or null, got 3"),
    (("worst_case", 0, "eps_text"), None, "worst_case[0].eps_text must be a string, got None"),
    (("worst_case", 0, "attacks"), None, "worst_case[0].attacks must be a list of strings, got None"),
]


@pytest.mark.parametrize("path, value, message", CASES, ids=[".".join(map(str, c[0])) for c in CASES])
def test_a_damaged_section_is_one_line_naming_the_field(tmp_path: Path, path: tuple, value: Any, message: str) -> None:
    def change(data: dict) -> None:
        data["provenance"].setdefault("randomness", {"draws": 1})  # the fixture predates it
        _set(path, value)(data)

    file = damaged(tmp_path, change)
    with pytest.raises(RecordError) as caught:
        check_record(load_record(file), str(file))
    assert str(caught.value).startswith(f"{file}: {message}")
    assert "\n" not in str(caught.value)


def test_the_quickstart_records_pass_and_so_do_absent_or_null_optional_fields(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    assert main(["table", str(QUICKSTART / "kwta.json"), str(QUICKSTART / "relu.json"), "--layout", "long"]) == 0
    capsys.readouterr()

    def change(data: dict) -> None:
        data["model"].update(kwta_ratio=None, num_kwta_layers=None, weight_sparsity=0.25)
        del data["dataset"]["name"]
        data["detection"]["layers"][0]["evidence"] = None
        data["noise"][0]["result"]["noise_score"] = None
        data["provenance"]["randomness"] = {"draws": 3, "randomized": True}

    edited = damaged(tmp_path, change)
    check_record(load_record(edited), "edited")
    assert main(["table", str(edited), "--layout", "long"]) == 0
    out = capsys.readouterr().out
    assert "| kwta " in out and "1539" not in out  # the noise score left unmeasured is not printed


def test_table_and_report_print_the_field_instead_of_a_traceback(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    # Before: `table` exited 0 in Markdown (it never reads the noise accuracies) but crashed with a TypeError in
    # --layout long; `report` crashed on the detected layer's kinds.
    noise = damaged(tmp_path, _set(("noise", 0, "result", "accuracy", 0), None))
    assert main(["table", str(noise), "--layout", "long"]) == 2
    assert capsys.readouterr().err == (f"error: {noise}: noise[0].result.accuracy[0] must be a number in [0, 1], "
                                       "got None\n")
    kinds = damaged(tmp_path, _set(("detection", "layers", 0, "kinds"), [1]))
    assert main(["report", str(kinds), "--out", str(tmp_path / "r.html")]) == 2
    assert capsys.readouterr().err == f"error: {kinds}: detection.layers[0].kinds[0] must be a string, got 1\n"
    assert not (tmp_path / "r.html").exists()


def test_a_sweep_report_checks_its_complete_cell_records(tmp_path: Path) -> None:
    # Before: load_sweep rendered whatever its cell records said (report checks only the records it is given).
    directory = tmp_path / "sweep"
    directory.mkdir()
    cell = directory / "cell.json"
    data = json.loads((QUICKSTART / "kwta.json").read_text())
    data["clean"]["correct"] -= 1  # a count its flags contradict
    cell.write_text(json.dumps(data))
    (directory / "sweep.json").write_text(json.dumps({"name": "s", "cells": [{"record": "cell.json"}]}))
    with pytest.raises(RecordError, match=rf"^{cell}: clean: "):
        load_sweep(directory)
    cell.write_text((QUICKSTART / "kwta.json").read_text())
    assert [r.label for r in load_sweep(directory).records] == ["kwta"]


def test_percent_text_of_a_huge_value_is_plain_text_not_a_decimal_error() -> None:
    # Before: decimal.InvalidOperation (a quantize past Decimal's 28 digits) for a weight sparsity of 1e30.
    assert percent_text(1e30) == f"{1e32:.1f}"
    assert percent_text(-1e13, 2) == f"{-1e15:.2f}"
    assert percent_text(0.125, 0) == "13" and percent_text(27 / 48) == "56.3"  # halves still rounded up below


def test_a_long_bad_value_is_cut_to_keep_the_error_one_short_line(tmp_path: Path) -> None:
    file = damaged(tmp_path, _set(("model", "kwta_ratio"), list(range(10_000))))
    with pytest.raises(RecordError) as caught:
        check_record(load_record(file), "r.json")
    assert str(caught.value) == "r.json: model.kwta_ratio must be a finite number or null, got [0, 1, 2, 3, 4, 5, ...]"


def test_a_wall_time_or_largest_violation_not_measured_passes(tmp_path: Path) -> None:
    """NaN (``null`` for ``max_violation``) is what a record holds for "not measured": a number, not a damage."""
    def change(data: dict) -> None:
        data["results"][0]["wall_time_s"] = float("nan")
        data["results"][1]["max_violation"] = None

    record = load_record(damaged(tmp_path, change))
    check_record(record, "r.json")
    assert record.results[0].wall_time_s != record.results[0].wall_time_s  # NaN kept, not refused or replaced
