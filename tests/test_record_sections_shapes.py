"""Records of shapes the quickstart records do not have — a randomized model's (several draws per verdict), one with
sanity results, probes and BPDA layers, a ``compare`` record with a transfer attack, a sweep cell's, a sharded run's,
several noise probes — each field changed to odd values, checked and rendered by every renderer (tables in every
format and layout, protocol, matrices, the HTML report, ``report --sweep``). Each case below crashed a renderer
with a raw exception on a record :func:`~kwta_robust.record_checks.check_record` accepted; now it is one line naming
the file and the field (:mod:`kwta_robust.record_sections`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from html_helpers import QUICKSTART
from kwta_robust.cli import main
from kwta_robust.record_checks import check_record
from kwta_robust.results import RecordError, load_record

RANDOMIZED = {"randomized": True, "seedable": True, "max_output_diff": 3.63, "draws": 1, "common_draws": True}


def _record(tmp_path: Path, path: tuple, value: Any) -> Path:
    """The quickstart kWTA record as a randomized model's, with ``path`` set to ``value``."""
    data = json.loads((QUICKSTART / "kwta.json").read_text())
    data["provenance"]["randomness"] = dict(RANDOMIZED)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    file = tmp_path / "rec.json"
    file.write_text(json.dumps(data))
    return file


CASES = [
    # randomness_notes (every table format and the HTML report): float(max_output_diff) raised TypeError/ValueError
    (("provenance", "randomness", "max_output_diff"), None,
     "provenance.randomness.max_output_diff must be a finite number, got None"),
    (("provenance", "randomness", "max_output_diff"), "x",
     "provenance.randomness.max_output_diff must be a finite number, got 'x'"),
    # the budget check's notes (every table format, the HTML report) read a re-run's threat point and broken samples:
    # float(eps) raised TypeError/ValueError, a non-integer index a TypeError; the quickstart's diagnostics[1] is one
    (("diagnostics", 1, "evidence", "eps"), None, "diagnostics[1].evidence.eps must be a finite number, got None"),
    (("diagnostics", 1, "evidence", "eps"), "x", "diagnostics[1].evidence.eps must be a finite number, got 'x'"),
    (("diagnostics", 1, "evidence", "broken_indices"), [1, "a"],
     "diagnostics[1].evidence.broken_indices[1] must be an integer >= 0, got 'a'"),
    (("diagnostics", 1, "evidence", "first_sample"), "x",
     "diagnostics[1].evidence.first_sample must be a JSON object or null, got 'x'"),
    (("diagnostics", 1, "evidence", "first_sample"), {"broken_indices": [1.5]},
     "diagnostics[1].evidence.first_sample.broken_indices[0] must be an integer >= 0, got 1.5"),
    # table --matrix places a record without a grid cell by its training's pruning: AttributeError / ValueError
    (("model", "training"), "x", "model.training must be a JSON object or null, got 'x'"),
    (("model", "training"), [1, "a"], "model.training must be a JSON object or null, got [1, 'a']"),
    (("model", "training", "pruning"), 1.5, "model.training.pruning must be a JSON object or null, got 1.5"),
    (("model", "training", "pruning"), {"target_sparsity": "x", "method": "magnitude"},
     "model.training.pruning.target_sparsity must be a finite number or null, got 'x'"),
]


@pytest.mark.parametrize("path, value, message", CASES, ids=[f"{'.'.join(map(str, c[0]))}={c[1]!r}" for c in CASES])
def test_a_damaged_field_of_another_shape_is_one_line_naming_it(tmp_path: Path, path: tuple, value: Any,
                                                                 message: str) -> None:
    file = _record(tmp_path, path, value)
    with pytest.raises(RecordError) as caught:
        check_record(load_record(file), str(file))
    assert str(caught.value) == f"{file}: {message}"


def test_table_names_the_randomness_field_instead_of_a_traceback(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    # Before: `table` (every format) and `report` crashed with "float() argument must be a string or a real number".
    file = _record(tmp_path, ("provenance", "randomness", "max_output_diff"), [])
    assert main(["table", str(file)]) == 2
    assert capsys.readouterr().err == (f"error: {file}: provenance.randomness.max_output_diff must be a finite "
                                       "number, got []\n")
    assert main(["report", str(file), "--out", str(tmp_path / "r.html")]) == 2
    assert not (tmp_path / "r.html").exists()


def test_a_randomized_records_note_still_renders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    file = _record(tmp_path, ("provenance", "randomness", "max_output_diff"), 3)  # an integer is a number too
    check_record(load_record(file), str(file))
    assert main(["table", str(file)]) == 0
    assert "randomized model (two seeds of torch's global RNG change its logits by up to 3)" in capsys.readouterr().out


def test_report_names_a_budget_checks_evidence_instead_of_a_traceback(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    # Before: `report` and `table` crashed in the budget check's notes ("could not convert string to float").
    file = _record(tmp_path, ("diagnostics", 1, "evidence", "eps"), "")
    assert main(["report", str(file), "--out", str(tmp_path / "r.html")]) == 2
    assert capsys.readouterr().err == f"error: {file}: diagnostics[1].evidence.eps must be a finite number, got ''\n"
    assert not (tmp_path / "r.html").exists()


def test_a_matrix_names_the_training_field_instead_of_a_traceback(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    # Before: `table --matrix` crashed with "AttributeError: 'str' object has no attribute 'get'".
    file = _record(tmp_path, ("model", "training"), "x")
    assert main(["table", str(file), str(QUICKSTART / "relu.json"), "--matrix"]) == 2
    assert capsys.readouterr().err == f"error: {file}: model.training must be a JSON object or null, got 'x'\n"


def test_a_record_without_training_or_with_a_settled_budget_check_still_renders(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """A foreign model's record has no training (null is as good); a settled budget check keeps its first sample."""
    file = _record(tmp_path, ("model", "training"), None)
    data = json.loads(file.read_text())
    data["diagnostics"][1]["evidence"]["first_sample"] = {"broken_indices": [3], "sampled": 8}
    file.write_text(json.dumps(data))
    check_record(load_record(file), str(file))
    assert main(["table", str(file), str(QUICKSTART / "relu.json"), "--matrix"]) == 0
    out = capsys.readouterr().out
    assert "1.0 (ReLU twin)" in out and "| 0.1 " in out
