"""README and docstring claims about records and their renderings (the docrecords audit), pinned where no other test
did: what a record's own writer produces is read back, what `diff` skips and compares, what each table format holds
(the record's numbers, rounded as stated, numbers staying numbers) and what the HTML overview shows."""

from __future__ import annotations

import json
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from pathlib import Path
from statistics import NormalDist

import pytest

from eval_helpers import make_record, make_result
from html_helpers import QUICKSTART, quickstart_records
from test_bad_inputs import one_error
from kwta_robust.cli import main
from kwta_robust.formats import render_records
from kwta_robust.html_records import overview_section
from kwta_robust.numbers import table_number
from kwta_robust.record_diff import record_differences
from kwta_robust.results import EvalRecord, Flag, load_record, save_record


def _half_up(fraction: float) -> str:
    """A fraction as the tables write a percentage, worked out by hand: one decimal, halves rounded up."""
    return str(Decimal(repr(100 * fraction)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _outward(low: float, high: float) -> str:
    """An interval's bounds as the tables write them, worked out by hand: one decimal, rounded outward (the lower
    bound down, the upper up: never narrower than computed, outward50)."""
    return (f"{Decimal(repr(100 * low)).quantize(Decimal('0.1'), rounding=ROUND_FLOOR)}–"
            f"{Decimal(repr(100 * high)).quantize(Decimal('0.1'), rounding=ROUND_CEILING)}")


def _wilson(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of ``k`` of ``n``, worked out here from its formula."""
    z = NormalDist().inv_cdf(0.975)
    p, centre = k / n, (k / n + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _accuracies(record: EvalRecord) -> dict[str, object]:
    """Every accuracy of ``record`` by the name of its wide-table column."""
    out: dict[str, object] = {"clean": record.clean}
    for r in record.results:
        out[f"{'+' if r.cumulative and r.position else ''}{r.label} Linf {r.eps_text}"] = r.robust
    for w in record.worst_case:
        out[f"worst case Linf {w.eps_text}"] = w.robust
    return out


# --- results.py: "NaN is written as null" + record_sections.RESULT_RULES: "A wall time ... may be NaN" ---------
def test_a_record_whose_wall_time_was_nan_renders_after_save_record(tmp_path: Path, capsys) -> None:
    """``save_record`` writes a NaN wall time as ``null``; ``table`` refused that file ("wall_time_s must be a
    number, got None"), its own writer's output, although the rules let a wall time be NaN ("not measured")."""
    record = make_record([make_result("pgd", [1, 0, 1, 1])])
    record.results[0].wall_time_s = math.nan
    path = tmp_path / "r.json"
    save_record(record, path)
    assert json.loads(path.read_text())["results"][0]["wall_time_s"] is None
    assert main(["table", str(path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "error:" not in err
    cells = [float(v) for v in out.splitlines()[1].split(",")[6:9]]  # pgd 3/4
    assert cells == [75, *(table_number(100 * b) for b in _wilson(3, 4))]  # bounds to 12 significant digits
    assert math.isnan(load_record(path).results[0].wall_time_s)


def test_a_wall_time_given_as_text_is_still_refused_in_one_line(tmp_path: Path, capsys) -> None:
    """Only ``null`` reads as NaN: any other non-number stays an error naming the field."""
    record = make_record([make_result("pgd", [1, 0, 1, 1])])
    data = record.to_dict()
    data["results"][0]["wall_time_s"] = "1.5"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    assert one_error(capsys, ["table", str(path)]).endswith(
        "results[0].wall_time_s must be a number or null, got '1.5'")


# --- results.py EvalRecord.from_dict: the list fields of a record --------------------------------------------
@pytest.mark.parametrize("field", ["results", "worst_case", "clean_flags"])
def test_a_record_list_field_of_another_type_is_one_error_line(field: str, tmp_path: Path, capsys) -> None:
    data = json.loads((QUICKSTART / "kwta.json").read_text())
    data[field] = {"0": 1}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    line = one_error(capsys, ["table", str(path)])
    assert line == f"error: {path}: record field {field!r} must be a list, got dict"


# --- record_diff.py / README "Reproducing a record": what diff skips and what it compares -------------------------
def test_diff_skips_the_checkpoint_file_but_compares_the_weights() -> None:
    base = json.loads((QUICKSTART / "kwta.json").read_text())
    other = json.loads(json.dumps(base))
    other["model"]["source"] = "/elsewhere/kwta-cnn.pt"
    other["model"]["checkpoint_sha256"] = "0" * 64
    other["model"]["training"]["training"] = {**(other["model"]["training"].get("training") or {}), "out": "x.pt"}
    other["provenance"]["finished_at"] = "2000-01-01T00:00:00+00:00"
    other["results"][1]["wall_time_s"] = 1e6
    assert record_differences(base, other) == []
    other["model"]["state_sha256"] = "f" * 64
    other["results"][0]["margins"] = other["results"][0]["margins"][:-1]  # another length: one difference
    found = record_differences(base, other)
    assert [line.split(":")[0] for line in found] == ["model.state_sha256", "results[0].margins"]


# --- formats: every number a table prints is the record's, rounded as stated; numbers stay numbers -----------------
def _wide_cells_checked(records: list[EvalRecord]) -> int:
    """Check every accuracy cell of the wide table of ``records`` against :func:`_half_up` (its interval against
    :func:`_outward`); the number checked."""
    lines = [line for line in render_records(records, "wide").splitlines() if line.startswith("| ")]
    headers = [c.strip() for c in lines[0].strip("| ").split(" | ")]
    checked = 0
    for record, line in zip(records, lines[1:]):  # the |---| line does not start with "| "
        cells = dict(zip(headers, (c.strip() for c in line.strip("| ").split(" | "))))
        for column, acc in _accuracies(record).items():
            assert cells[column] == f"{_half_up(acc.accuracy)} ({_outward(acc.ci_low, acc.ci_high)})"
            checked += 1
    return checked


def test_the_wide_table_prints_each_accuracy_rounded_half_up_with_its_interval() -> None:
    assert _wide_cells_checked(quickstart_records()) == 2 * 9  # clean, 3 attacks x 2 epsilons, 2 worst cases
    # the quickstart's accuracies (k/200) need no rounding: 27/48 = 56.25 % is an exact half, 56.3 rounded up
    half = make_record([make_result("pgd", [1] * 27 + [0] * 21)])
    assert _half_up(half.results[0].robust.accuracy) == "56.3"
    assert _wide_cells_checked([half]) == 3  # clean, pgd, worst case


def test_the_json_export_holds_each_accuracy_as_a_number_in_percent() -> None:
    records = quickstart_records()
    rows = json.loads(render_records(records, "json"))["rows"]
    for record, row in zip(records, rows):
        assert row["model"] == record.label and row["n"] == record.clean.n
        for column, acc in _accuracies(record).items():
            assert row[f"{column} (%)"] == 100 * acc.correct / acc.n  # from the counts: exact where it is (csv51)
            assert row[f"{column} ci_low (%)"] == table_number(100 * acc.ci_low)  # 12 significant digits
            assert row[f"{column} ci_high (%)"] == table_number(100 * acc.ci_high)


def test_the_csv_export_holds_each_accuracy_as_the_json_number() -> None:
    """The JSON number, to 12 significant digits (six rounded some numbers unlike the Markdown and LaTeX texts)."""
    records = quickstart_records()
    text = render_records(records, "csv").splitlines()
    headers = text[0].split(",")
    for record, line in zip(records, text[1:]):
        cells = dict(zip(headers, line.split(",")))
        for column, acc in _accuracies(record).items():
            name = ("'" + column) if column.startswith("+") else column  # a formula start gets a leading '
            assert float(cells[f"{name} (%)"]) == 100 * acc.correct / acc.n
            assert float(cells[f"{name} ci_high (%)"]) == table_number(100 * acc.ci_high)


# --- html_records.py: the overview card shows every flag code, not the critical ones alone ----------------------
def test_the_overview_shows_every_flag_code_once() -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 1])])
    record.diagnostics = [Flag("adaptive-beats-pgd", "critical", "m"), Flag("budget-checked", "info", "a"),
                          Flag("budget-checked", "info", "b")]
    body = str(overview_section([record]).body)
    assert body.count("adaptive-beats-pgd") == 1 and body.count("budget-checked") == 1
