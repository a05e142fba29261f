"""Session 51: the percentages of the machine-readable tables (``--format csv`` / ``json``) come out exact where they
are, and one quantity always has the same digits. A percentage was ``fraction * 100`` in binary floating point, so
22 of 40 read ``55.00000000000001``, and the two bounds of a symmetric paired interval differed in their last digits;
now a percentage of counts is ``100 * count / n`` and every computed number (interval bounds, means, p-values) is
given to 12 significant digits (:data:`kwta_robust.numbers.TABLE_DIGITS`). Records keep their exact fractions."""

from __future__ import annotations

import csv
import io
import json

from eval_helpers import make_record, make_result
from kwta_robust.formats import render_records, render_records_as_matrices, render_stdout
from kwta_robust.results import EvalRecord, NoiseResult

N, CORRECT = 40, 22  # 22 of 40 is 55 % exactly; 100 * (22 / 40) is 55.00000000000001


def _record(label: str = "m") -> EvalRecord:
    """40 samples, 22 classified correctly and 22 robust to PGD (the others not attacked): 55 % clean, robust and
    worst case."""
    flags = [1] * CORRECT + [-1] * (N - CORRECT)
    return make_record([make_result("pgd", flags)], label=label, clean_flags=[1] * CORRECT + [0] * (N - CORRECT))


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_22_of_40_is_55_in_the_wide_csv_and_json() -> None:
    assert 100 * (CORRECT / N) == 55.00000000000001 and 100 * CORRECT / N == 55.0  # the premise
    record = _record()
    row, = _csv_rows(render_records([record], "csv"))
    assert [row[f"{c} (%)"] for c in ("clean", "pgd Linf 0.3", "worst case Linf 0.3")] == ["55", "55", "55"]
    data = json.loads(render_records([record], "json"))
    values = [data["rows"][0][f"{c} (%)"] for c in ("clean", "pgd Linf 0.3", "worst case Linf 0.3")]
    assert values == [55.0, 55.0, 55.0] and all(type(v) is float for v in values)  # numbers, floats, not text
    assert record.clean.accuracy == CORRECT / N and record.results[0].robust.accuracy == CORRECT / N  # unchanged


def test_22_of_40_is_55_in_the_long_csv_and_json() -> None:
    record = _record()
    rows = _csv_rows(render_records([record], "csv", layout="long"))
    assert {(r["attack"], r["robust (%)"]) for r in rows if r["attack"] in ("clean", "pgd", "worst case")} == {
        ("clean", "55"), ("pgd", "55"), ("worst case", "55")}
    data = json.loads(render_stdout([record], "json", detail=True))
    values = {r["attack"]: r["robust (%)"] for r in data["rows"] if r["attack"] in ("clean", "pgd", "worst case")}
    assert values == {"clean": 55.0, "pgd": 55.0, "worst case": 55.0}
    assert all(type(v) is float for v in values.values())


def test_a_json_cell_is_a_float_in_the_json_text() -> None:
    text = render_records([_record()], "json")
    assert '"clean (%)": 55.0,' in text and '"clean (%)": "' not in text  # a JSON number, never a string


def test_the_matrices_long_table_writes_55() -> None:
    record = _record()
    record.model["sweep_cell"] = {"kwta_ratio": 0.5, "weight_sparsity": 0.0, "pruning_method": "magnitude"}
    rows = _csv_rows(render_records_as_matrices([record], "csv"))
    assert rows and {r["accuracy (%)"] for r in rows} == {"55"}
    data = json.loads(render_records_as_matrices([record], "json"))
    assert {r["accuracy (%)"] for r in data["rows"]} == {55.0}


def _paired_records() -> list[EvalRecord]:
    """Two records on the same 31 samples, 17 correct each: 15 both, 2 only the first, 2 only the second, 12 neither.
    Their paired interval is symmetric; computed as floats its bounds were -13.377957458012624 and
    13.37795745801262."""
    a = [1] * 15 + [1, 1, 0, 0] + [0] * 12
    b = [1] * 15 + [0, 0, 1, 1] + [0] * 12
    return [make_record([], n=31, label="first", clean_flags=a), make_record([], n=31, label="second", clean_flags=b)]


def test_a_symmetric_paired_interval_has_bounds_of_one_number_with_two_signs() -> None:
    records = _paired_records()
    _, row = _csv_rows(render_stdout(records, "csv"))
    low, high = row["paired clean diff ci_low (points)"], row["paired clean diff ci_high (points)"]
    assert low == "-" + high and high == "13.377957458", (low, high)
    assert row["paired clean diff (points)"] == "0"
    data = json.loads(render_stdout(records, "json"))["rows"][1]
    assert data["paired clean diff ci_low (points)"] == -data["paired clean diff ci_high (points)"] == -13.377957458
    long_row = next(r for r in _csv_rows(render_stdout(records, "csv", detail=True))
                    if r["model"] == "second" and r["attack"] == "clean")
    assert long_row["paired diff ci_low (points)"] == "-" + long_row["paired diff ci_high (points)"]


def test_a_dyadic_mcnemar_p_and_a_difference_of_counts_are_exact() -> None:
    """3 and 8 discordant pairs of 200: McNemar's p is 464/2048 = 0.2265625 exactly (computed as a sum of
    exponentials it read 0.2265625000000006), the difference -5 of 200 is -2.5 points."""
    first = [1] * 187 + [1, 1, 1] + [0] * 8 + [0, 0]  # 187 both, 3 only first, 8 only second, 2 neither
    second = [1] * 187 + [0, 0, 0] + [1] * 8 + [0, 0]
    records = [make_record([], n=200, label="first", clean_flags=first),
               make_record([], n=200, label="second", clean_flags=second)]
    _, row = _csv_rows(render_stdout(records, "csv"))
    assert (row["paired clean only first"], row["paired clean only second"]) == ("3", "8")
    assert row["paired clean McNemar p"] == "0.2265625" and row["paired clean diff (points)"] == "-2.5"


def test_a_noise_level_and_score_read_as_the_clean_column_does() -> None:
    """A noise level of 22/40 (the probe's stored fraction) is 55 like the clean column of the same count, and a
    score averaged over 3 draws (226 / 3) has 12 significant digits."""
    record = _record()
    record.noise = [NoiseResult("numenta", [0.0, 0.1], 3, 0, {"kind": "numenta", "num_samples": N,
                                                               "accuracy": [CORRECT / N, 0.5], "noise_score": 226 / 3},
                                0.5)]
    row, = _csv_rows(render_records([record], "csv"))
    assert row["noise numenta level 0 (%)"] == row["clean (%)"] == "55"
    assert row["noise numenta score"] == row["noise score"] == "75.3333333333"
    data = json.loads(render_records([record], "json"))["rows"][0]
    assert data["noise numenta level 0 (%)"] == 55.0 and data["noise numenta score"] == 75.3333333333
