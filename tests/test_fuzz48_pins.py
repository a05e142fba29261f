"""The disagreements between table formats that the cross-format fuzz (:mod:`test_fuzz48_formats`) found, each
pinned on a small record: CSV's six significant digits, a noise score written with ``.6g`` beside the tables'
rounding, epsilons written alike (0.3 and 0.1 + 0.2) named one way in the columns and another in the paired
comparison, the notes, the protocol and the HTML report, the long layout's CSV/JSON dropping a randomized model's
column, a lost cell unmarked in the PNG heatmap, and attacks labelled ``worst case`` or ``clean``."""

from __future__ import annotations

import csv
import io
import json

import pytest

from eval_helpers import make_record, make_result
from fuzz48_tables import html_tables
from kwta_robust.formats import render_records_as_matrices, render_stdout
from kwta_robust.html_report import build_report
from kwta_robust.matrix import build_matrices, matrix_table
from kwta_robust.narrow import threat_tables
from kwta_robust.numbers import table_number
from kwta_robust.paired import paired_table
from kwta_robust.protocol import protocol_table
from kwta_robust.report import cell_text, compare_table, detail_table
from kwta_robust.results import EvalRecord, Flag, NoiseResult

def _scored(score: float, draws: int, label: str = "m") -> EvalRecord:
    """A record of 4 samples whose Numenta probe scored ``score`` (its accuracies left as they are: rendering does
    not check them)."""
    rec = make_record([make_result("pgd", [1, 0, 1, 1], eps=8 / 255)], label=label)
    rec.noise = [NoiseResult("numenta", [0.0, 0.1], draws, 0, {"kind": "numenta", "num_samples": 4,
                                                              "accuracy": [1.0, 0.5], "noise_score": score}, 0.5)]
    return rec


def test_csv_keeps_every_digit_the_other_formats_round() -> None:
    """CSV wrote floats with six significant digits: a noise score of 100685.25 (Numenta's score of 10,000 images over
    11 levels, averaged over 4 draws) was ``100685`` where Markdown and LaTeX print ``100685.3``, and 8/255 in the
    matrices' long form read ``0.0313725``. CSV holds the JSON number now."""
    records = [_scored(100685.25, 4)]
    row = dict(zip(*csv.reader(io.StringIO(render_stdout(records, "csv")))))
    assert row["noise score"] == "100685.25" and float(row["pgd Linf 8/255 ci_high (%)"]) == table_number(100 * records[
        0].results[0].robust.ci_high)  # to 12 significant digits (csv51), far beyond the 0.1 shown
    assert "| 100685.3 |" in render_stdout(records, "wide") and "& 100685.3 &" in render_stdout(records, "latex")
    records[0].model["sweep_cell"] = {"kwta_ratio": 0.5, "weight_sparsity": 0.0, "pruning_method": "magnitude"}
    long_rows = list(csv.DictReader(io.StringIO(render_records_as_matrices(records, "csv"))))
    assert {r["eps"] for r in long_rows if r["metric"] != "clean" and "noise" not in r["metric"]} == {
        "0.03137254901960784"}


def test_the_long_table_and_the_report_write_a_noise_score_as_the_tables_do() -> None:
    """A score of 1.9375 (16 draws) is ``1.938`` in the wide table and the report's overview; the long table's note
    (``evaluate``'s output) and the report's noise section wrote ``1.9375`` (``.6g``)."""
    records = [_scored(1.9375, 16)]
    assert "| 1.938 |" in render_stdout(records, "wide")
    note, = [n for n in detail_table(records[0]).notes if n.startswith("noise numenta")]
    assert ", noise score 1.938, " in note
    tables, _ = html_tables(build_report(records))
    noise, = [t for t in tables if t[0][:6] == ["model", "probe", "levels", "draws", "samples", "noise score"]]
    assert noise[1][5] == "1.938" and any(["noise score", "1.938"] in t for t in tables)


def test_epsilons_written_alike_are_told_apart_in_the_paired_table_and_the_report() -> None:
    """0.3 and 0.1 + 0.2, both written ``0.3``: the wide table names them ``Linf 0.3`` and ``Linf
    0.30000000000000004``, but the paired comparison had two rows ``worst case Linf 0.3`` and the HTML report's
    overview cards, worst-case and cascade tables two rows ``Linf 0.3`` with other numbers."""
    def record(label: str, second: list[int]) -> EvalRecord:
        return make_record([make_result("pgd", [1, 0, 1, 1], eps=0.3), make_result("pgd", second, eps=0.1 + 0.2)],
                           label=label)
    records = [record("a", [1, 1, 1, 1]), record("b", [0, 0, 1, 1])]
    names = ["worst case Linf 0.3", "worst case Linf 0.30000000000000004"]
    assert [h for h in compare_table(records).headers if h.startswith("worst")] == names
    assert [cell_text(row[1]) for row in paired_table(records).rows] == ["clean", *names]
    tables, _ = html_tables(build_report(records))
    cards = [t for t in tables if t[0][0] == "activation"]
    assert [[r[0] for r in t if r[0].startswith("worst")] for t in cards] == [names, names]
    worst, = [t for t in tables if t[0][:3] == ["model", "threat", "worst case"]]
    assert [r[:3] for r in worst[1:]] == [["a", "Linf 0.3", "75.0 (30.0–95.5)"],
                                          ["a", "Linf 0.30000000000000004", "100.0 (51.0–100.0)"],
                                          ["b", "Linf 0.3", "75.0 (30.0–95.5)"],
                                          ["b", "Linf 0.30000000000000004", "50.0 (15.0–85.0)"]]
    cascade = [t for t in tables if t[0][:2] == ["threat", "misclassified clean"]]
    assert [[r[0] for r in t[1:]] for t in cascade] == [["Linf 0.3", "Linf 0.30000000000000004"]] * 2


def _randomized(label: str) -> EvalRecord:
    """A randomized model's record (3 draws per verdict): its long table has an ``expected`` column."""
    rec = make_record([make_result("pgd", [1, 0, 1, 1])], label=label)
    rec.provenance["randomness"] = {"randomized": True, "draws": 3, "seedable": True, "max_output_diff": 0.5}
    rec.clean_error_rates = [0.0, 1 / 3, 0.0, 0.0]
    rec.results[0].error_rates = [1 / 3, 1.0, 0.0, 0.0]
    return rec


@pytest.mark.parametrize("randomized_first", [True, False])
def test_the_long_layout_in_csv_and_json_keeps_every_records_columns(randomized_first: bool) -> None:
    """``table --layout long`` of a randomized model's record and a plain one: CSV and JSON took the first table's
    columns for every record, so the randomized record's ``expected`` accuracies were dropped when it came second,
    and the plain record's CSV rows were short when it came first."""
    records = [_randomized("rand"), make_record([make_result("pgd", [1, 1, 0, 0])], label="plain")]
    records = records if randomized_first else records[::-1]
    rows = list(csv.DictReader(io.StringIO(render_stdout(records, "csv", detail=True)), restval="SHORT"))
    pgd, = [row for row in detail_table(records[not randomized_first]).rows if cell_text(row[2]) == "pgd"]
    assert cell_text(pgd[-1]) == "66.7 (20.4–100.0)"  # what Markdown shows
    expected = {r["model"]: r["expected (%)"] for r in rows if r["attack"] == "pgd"}
    assert expected == {"rand": "66.6666666667", "plain": ""}  # a mean: 12 significant digits (csv51)
    assert all("SHORT" not in r.values() for r in rows)
    data = json.loads(render_stdout(records, "json", detail=True))
    assert {r["model"]: r["expected (%)"] for r in data["rows"] if r["attack"] == "pgd"} == {
        "rand": table_number(100 * pgd[-1].value), "plain": None}


def test_notes_name_a_threat_point_as_the_columns_do() -> None:
    """The budget check's verified bound and a randomized model's expected accuracy at 0.3 and at 0.1 + 0.2 were both
    ``at Linf 0.3`` in the notes, under columns ``Linf 0.3`` and ``Linf 0.30000000000000004``."""
    rec = make_record([make_result("pgd", [1, 0, 1, 1], eps=0.3), make_result("pgd", [1, 1, 1, 1], eps=0.1 + 0.2)])
    rec.provenance["randomness"] = {"randomized": True, "draws": 3, "seedable": True, "max_output_diff": 0.5}
    rec.clean_error_rates = [0.0] * 4
    rec.results[0].error_rates, rec.results[1].error_rates = [0.0, 1.0, 0.0, 0.0], [0.0] * 4
    rec.diagnostics = [Flag("budget-checked", "info", "re-ran", {"source": "rerun", "attack": "pgd", "norm": "linf",
                                                                  "eps": eps, "factor": 3, "broken_indices": [0]})
                       for eps in (0.3, 0.1 + 0.2)]
    notes = compare_table([rec]).notes
    assert [n[:n.index(":")] for n in notes if n.startswith("budget check")] == [
        "budget check at Linf 0.3", "budget check at Linf 0.30000000000000004"]
    randomized, = [n for n in notes if n.startswith("randomized model")]
    assert ", Linf 0.3 " in randomized and ", Linf 0.30000000000000004 " in randomized


def test_a_lost_cell_is_marked_in_the_png_heatmap_as_in_the_other_formats() -> None:
    """A cell the sweep's manifest lists as done whose record is gone is ``—*`` in the Markdown and HTML matrices; the
    PNG heatmap (the figure a paper takes) wrote a bare ``—`` and no caption for the mark."""
    from kwta_robust.plots import heatmap_figure
    from kwta_robust.sweep_lost import LostCell, mark_lost
    rec = make_record([make_result("pgd", [1, 0, 1, 1])], label="relu")
    rec.model["sweep_cell"] = {"kwta_ratio": 1.0, "weight_sparsity": 0.0, "pruning_method": "magnitude"}
    matrices = build_matrices([rec])
    mark_lost(matrices, [LostCell(0.1, 0.0, "magnitude", "record gone", "k/N 0.1 × 0 (dense): record gone")])
    worst = matrices[1]
    assert [cell_text(c) for row in matrix_table(worst).rows for c in row[1:]] == ["75.0 (30.0–95.5)", "—*"]
    figure = heatmap_figure(worst)
    assert [t.get_text() for t in figure.axes[0].texts] == ["75.0\n[30.0, 95.5]", "—*"]
    assert "* not comparable with the other cells: see the matrices' legend" in [t.get_text() for t in figure.texts]


def test_attacks_labelled_worst_case_or_clean_keep_their_own_numbers() -> None:
    """An attack labelled ``worst case`` (75%) beside the worst case (50%) and one labelled ``clean`` (50%): the
    terminal table had two rows ``worst case``; the matrices showed the worst case's 50% under the first attack's
    matrix and the clean accuracy (100%) under the second's, titled ``clean accuracy``, and the long form's metric
    column could not tell them apart. The wide table named the column by its place already."""
    rec = make_record([make_result("worst case", [1, 0, 1, 1]), make_result("clean", [0, 0, 1, 1], position=1)])
    rec.model["sweep_cell"] = {"kwta_ratio": 0.5, "weight_sparsity": 0.0, "pruning_method": "magnitude"}
    threat, = threat_tables([rec])
    assert [[cell_text(c) for c in row] for row in threat.rows] == [
        ["worst case (row 1)", "75.0 (30.0–95.5)"], ["clean", "50.0 (15.0–85.0)"],
        ["worst case", "50.0 (15.0–85.0)"]]
    assert {h: cell_text(c) for h, c in zip(compare_table([rec]).headers, compare_table([rec]).rows[0])}[
        "worst case Linf 0.3 (column 5)"] == "75.0 (30.0–95.5)"
    shown = {m.title: cell_text(matrix_table(m).rows[0][1]) for m in build_matrices([rec])}
    assert shown == {"clean accuracy (magnitude pruning, n=4)": "100.0 (51.0–100.0)",
                     "worst case robust accuracy at Linf 0.3 (magnitude pruning, n=4)": "50.0 (15.0–85.0)",
                     "worst case (attack) robust accuracy at Linf 0.3 (magnitude pruning, n=4)": "75.0 (30.0–95.5)",
                     "clean (attack) robust accuracy at Linf 0.3 (magnitude pruning, n=4)": "50.0 (15.0–85.0)"}
    rows = list(csv.DictReader(io.StringIO(render_records_as_matrices([rec], "csv"))))
    assert [(r["metric"], r["accuracy (%)"]) for r in rows] == [
        ("clean", "100"), ("worst case", "50"), ("worst case (attack)", "75"), ("clean (attack)", "50")]


def test_the_paired_table_names_a_threat_point_alike_in_every_pair() -> None:
    """Three records, the second with 0.3 beside 0.1 + 0.2: the wide table names 0.1 + 0.2 ``Linf
    0.30000000000000004``; the paired comparison named it so for the pair holding the second record and ``Linf 0.3``
    (the wide table's name of the other point) for the pair without it (found by the seed sweep)."""
    first, third = (make_record([make_result("pgd", flags, eps=0.1 + 0.2)], label=label)
                    for label, flags in (("a", [1, 0, 1, 1]), ("c", [0, 0, 1, 1])))
    second = make_record([make_result("pgd", [1, 1, 1, 1], eps=0.1 + 0.2), make_result("pgd", [1, 1, 0, 1], eps=0.3)],
                         label="b")
    rows = [(cell_text(r[0]), cell_text(r[1])) for r in paired_table([first, second, third]).rows]
    assert rows == [("a − b", "clean"), ("a − b", "worst case Linf 0.30000000000000004"),
                    ("a − c", "clean"), ("a − c", "worst case Linf 0.30000000000000004")]


def test_the_protocol_lists_every_threat_point_an_attack_ran_at() -> None:
    """PGD at 0.3 and at 0.1 + 0.2 (both written ``0.3``): the protocol's threats cell read ``Linf 0.3``, one threat
    point of the two the tables show; it names both as the columns do now."""
    rec = make_record([make_result("pgd", [1, 0, 1, 1], eps=0.3), make_result("pgd", [1, 1, 1, 1], eps=0.1 + 0.2)])
    row, = protocol_table([rec]).rows
    assert cell_text(row[4]) == "Linf 0.3, 0.30000000000000004"
