"""Fuzz round on ``kwta-robust diff`` and the paired table: what broke the one-line-error rule or gave a wrong result.

``diff`` of a record with itself named every NaN field as a difference (NaN != NaN); a ``resumed_on`` /
``resumed_threads`` that is not a list raised a raw TypeError; a number of over 4,300 digits raised a raw ValueError
while loading (also in ``table`` and ``report``). Records of models trained on different splits of a self-split
data set (mnist5k's ``data_split_seed``) hold the same indices of different images: they were paired as the same
samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.comparability import comparability_notes, same_samples
from kwta_robust.paired import paired_table
from kwta_robust.record_diff import record_differences
from kwta_robust.results import EvalRecord, save_record
from test_cli_eval import run_error


def saved(tmp_path: Path, name: str, record: EvalRecord) -> Path:
    save_record(record, tmp_path / name)
    return tmp_path / name


def test_a_record_with_nan_fields_is_the_same_result_as_itself(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    path = saved(tmp_path, "a.json", make_record([make_result("pgd", [1, 0, 1, 1])]))
    data = json.loads(path.read_text())
    # a NaN from another tool's writer (json.dumps allows NaN), in a field a valid record may hold NaN in
    # (record_sections.RESULT_RULES); a NaN interval bound contradicts its counts, which diff refuses as table does
    data["results"][0]["max_violation"] = float("nan")
    path.write_text(json.dumps(data))
    assert "NaN" in path.read_text()
    assert main(["diff", str(path), str(path)]) == 0
    assert capsys.readouterr().out.startswith("same result")
    other = dict(data, results=[dict(data["results"][0], max_violation=0.25)])
    assert record_differences(data, other) == ["results[0].max_violation: nan != 0.25"]


@pytest.mark.parametrize("resumed", [{"resumed_on": "cpu", "resumed_threads": 3}, {"resumed_threads": None}])
def test_resumption_fields_that_are_not_lists_are_compared_as_values(resumed: dict) -> None:
    a = {"provenance": {"device": "cpu", "torch_threads": 1}}
    b = {"provenance": {"device": "cpu", "torch_threads": 1, **resumed}}
    assert record_differences(a, b) == [f"provenance.{key}: only in the second" for key in resumed]


def test_a_number_too_long_to_read_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = saved(tmp_path, "a.json", make_record([make_result("pgd", [1, 0, 1, 1])]))
    long = tmp_path / "long.json"
    long.write_text(path.read_text().replace('"seed": 0', '"seed": 1' + "0" * 5000, 1))
    for argv in (["diff", str(path), str(long)], ["table", str(long)]):
        line = run_error(capsys, argv)
        assert line.startswith(f"error: record: {long} is not valid JSON (Exceeds the limit (4300 digits)")


def split_pair(seed_a: object, seed_b: object, dataset: object = "mnist5k") -> list[EvalRecord]:
    records = []
    for label, seed in (("a", seed_a), ("b", seed_b)):
        record = make_record([make_result("pgd", [1, 0, 1, 1])], label=label)
        record.dataset["name"] = record.config["dataset"] = dataset
        record.model["training"] = {"dataset": "mnist5k", "data_split_seed": seed}
        records.append(record)
    return records


def test_records_of_other_data_splits_are_not_paired() -> None:
    a, b = split_pair(0, 3)
    assert a.dataset["indices"] == b.dataset["indices"] and not same_samples(a, b)
    assert paired_table([a, b]) is None
    assert comparability_notes([a, b])[0].startswith("the records were evaluated on different samples of mnist5k")


@pytest.mark.parametrize("seeds", [(0, None), (0, "x"), (3, 3), (0, 3.0)])
def test_split_seeds_are_read_as_the_data_loading_reads_them(seeds: tuple) -> None:
    """A seed that is not a whole number loads the canonical split (0), as ``evaluate`` does."""
    a, b = split_pair(*seeds)
    assert same_samples(a, b) and paired_table([a, b]) is not None


def test_the_split_seed_does_not_matter_for_a_data_file() -> None:
    a, b = split_pair(0, 3, dataset={"file": "x.npz", "sha256": "ab"})
    assert same_samples(a, b)
