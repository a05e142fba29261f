"""Noise results with 95% intervals (kwta_robust.noise_ci): the noise score's t interval over the samples (n × the
mean per-sample score's, Student 1908; from 30 samples, with per-sample counts) and each level's accuracy interval
(Wilson with one draw, t with several), in the record tables of every format, the notes and the noise matrices;
per-level noise matrices in ``table --matrix``. Records without per-sample counts render as before."""

from __future__ import annotations

import csv
import io
import json
import math
import random
from pathlib import Path

import pytest
from scipy.stats import binomtest, t

from eval_helpers import make_record
from html_helpers import quickstart_records
from kwta_robust.cli import main
from kwta_robust.formats import render_records_as_matrices, render_stdout, render_table
from kwta_robust.html_records import noise_section, overview_section
from kwta_robust.matrix import DENSE, build_matrices, long_table, matrices_by_point, matrix_table
from kwta_robust.narrow import overview_table
from kwta_robust.report import cell_text, compare_table, detail_table, noise_score_notes, other_noise_notes
from kwta_robust.results import EvalRecord, NoiseResult, save_record

LEVELS = [0.0, 0.25, 0.5]


def counts_for(n: int, rates: tuple[float, ...], draws: int = 1, seed: int = 0) -> list[list[int]]:
    """``[levels][n]`` counts of correct draws, each draw right with the level's rate (seeded)."""
    rng = random.Random(seed)
    return [[sum(rng.random() < rate for _ in range(draws)) for _ in range(n)] for rate in rates]


def numenta(counts: list[list[int]], draws: int = 1, kind: str = "numenta", store_counts: bool = True) -> NoiseResult:
    n = len(counts[0])
    score = sum(map(sum, counts)) / draws
    result = {"kind": kind, "params": {"value": 1.0} if kind == "numenta" else {"std": 0.1}, "num_samples": n,
              "accuracy": [sum(row) / (draws * n) for row in counts], "noise_score": score,
              "noise_score_normalized": score / (len(LEVELS) * n)}
    if store_counts:
        result["correct_counts"] = counts
    return NoiseResult(kind, list(LEVELS), draws, 0, result, 0.1)


def scored_record(n: int = 40, draws: int = 1, label: str = "kwta", seed: int = 0, **kw) -> EvalRecord:
    record = make_record(n=n, label=label)
    record.noise.append(numenta(counts_for(n, (1.0, 0.7, 0.3), draws, seed), draws, **kw))
    return record


def t_reference(counts: list[list[int]], draws: int) -> tuple[float, float]:
    """The score's interval from scipy: n × (mean ± t_{0.975, n-1} · sd / sqrt(n)) of the per-sample scores."""
    scores = [sum(column) / draws for column in zip(*counts)]
    n = len(scores)
    mean = sum(scores) / n
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    half = t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return (n * (mean - half), n * (mean + half))


@pytest.mark.parametrize("draws", [1, 2])
def test_the_noise_score_cell_holds_n_times_the_t_interval_of_the_per_sample_scores(draws: int) -> None:
    record = scored_record(draws=draws)
    low, high = t_reference(record.noise[0].result["correct_counts"], draws)
    cell = compare_table([record]).rows[0][compare_table([record]).headers.index("noise score")]
    assert cell.value == record.noise_score() and not cell.percent
    assert cell.ci == pytest.approx((low, high), abs=1e-6) and low < cell.value < high
    assert cell_text(cell) == f"{cell.value:g} ({math.floor(low)}–{math.ceil(high)})"  # rounded outward
    narrow = overview_table([record]).rows[0]
    assert [c.ci for c in narrow if c.value == record.noise_score()] == [cell.ci]


def test_no_interval_below_thirty_samples_or_without_per_sample_counts() -> None:
    for record in (scored_record(n=29), scored_record(n=40, store_counts=False)):
        cell = compare_table([record]).rows[0][compare_table([record]).headers.index("noise score")]
        assert cell.ci is None and cell_text(cell) == f"{record.noise_score():g}"
        assert "noise score ci_low" not in render_stdout([record], "csv")
        note, = [n for n in noise_score_notes([record]) if n.startswith("noise score:")]
        assert "n ≥ 30; else the score is shown alone" in note
    small = scored_record(n=29)  # one draw: each level's accuracy is a binomial proportion, Wilson at any n
    assert "(95% interval: Wilson)" in detail_table(small).notes[1]


def test_machine_readable_formats_give_the_bounds_as_numbers() -> None:
    records = [scored_record(label="kwta"), scored_record(label="relu", seed=1), scored_record(label="old", n=10)]
    rows = list(csv.DictReader(io.StringIO(render_stdout(records, "csv"))))
    for record, row in zip(records[:2], rows):
        low, high = t_reference(record.noise[0].result["correct_counts"], 1)
        assert float(row["noise score"]) == record.noise_score()
        assert (float(row["noise score ci_low"]), float(row["noise score ci_high"])) == pytest.approx((low, high),
                                                                                                    rel=1e-5)
    assert (rows[2]["noise score ci_low"], rows[2]["noise score ci_high"]) == ("", "")  # 10 samples: none
    data = json.loads(render_stdout(records, "json"))
    first = data["rows"][0]
    assert isinstance(first["noise score ci_low"], float) and isinstance(first["noise score ci_high"], float)
    assert data["rows"][2]["noise score ci_low"] is None


def test_latex_and_html_show_the_interval() -> None:
    record = scored_record()
    low, high = t_reference(record.noise[0].result["correct_counts"], 1)
    bounds = f"[{math.floor(low)}, {math.ceil(high)}]"
    assert rf"{record.noise_score():g}\,{{\scriptsize{bounds}}}" in render_table(compare_table([record]), "latex")
    card = str(overview_section([record]).body)
    assert f"{record.noise_score():g} ({math.floor(low)}–{math.ceil(high)})" in card
    section = str(noise_section([record]).body)
    assert f"({math.floor(low)}–{math.ceil(high)})" in section and "95% interval over the images" in section


def _outward(low: float, high: float) -> str:
    """An interval (fractions) in % as every table writes it: rounded outward, the lower bound down and the upper
    up (outward50)."""
    return f"{math.floor(1000 * low) / 10:.1f}–{math.ceil(1000 * high) / 10:.1f}"


def test_the_notes_give_the_score_per_image_and_level_and_each_levels_accuracy_with_intervals() -> None:
    record = scored_record()
    counts = record.noise[0].result["correct_counts"]
    low, high = t_reference(counts, 1)
    note, = [n for n in noise_score_notes([record]) if n.startswith("noise score:")]
    scale = len(LEVELS) * 40
    assert f"per image and level: {100 * record.noise_score() / scale:.1f}% " \
           f"({math.floor(1000 * low / scale) / 10:.1f}–{math.ceil(1000 * high / scale) / 10:.1f})" in note  # outward
    gaussian = make_record(n=40, label="g")
    gaussian.noise.append(numenta(counts, kind="gaussian"))
    wilson = [binomtest(sum(row), 40).proportion_ci(method="wilson") for row in counts]
    expected = " / ".join(f"{100 * sum(row) / 40:.1f} ({_outward(ci.low, ci.high)})"
                          for row, ci in zip(counts, wilson))
    assert other_noise_notes([gaussian]) == [  # the score with its interval, as the long table's note (noise50)
        f"noise gaussian: levels 0 / 0.25 / 0.5, 1 draw, std 0.1, noise score {record.noise_score():g} (95% interval "
        f"{math.floor(low)}–{math.ceil(high)}), accuracy % per level (95% interval: Wilson) {expected}"]
    detail = [n for n in detail_table(record).notes if n.startswith("noise numenta")]
    assert detail == [f"noise numenta: levels 0 / 0.25 / 0.5, 1 draw, noise pixel value 1, noise score "
                      f"{record.noise_score():g} (95% interval {math.floor(low)}–{math.ceil(high)}), accuracy % per "
                      f"level (95% interval: Wilson) {expected}"]


def test_several_draws_give_each_level_the_t_interval_of_the_per_sample_fractions() -> None:
    record = scored_record(draws=3)
    counts = record.noise[0].result["correct_counts"]
    detail, = [n for n in detail_table(record).notes if n.startswith("noise numenta")]
    # level 0, the clean input (40 of 40 right in all 3 draws): Wilson, as the clean column (noise50)
    assert "accuracy % per level (95% interval: Wilson at level 0, else t over the images) 100.0 (91.2–100.0) / " \
        in detail
    fractions = [c / 3 for c in counts[1]]
    mean = sum(fractions) / 40
    sd = math.sqrt(sum((f - mean) ** 2 for f in fractions) / 39)
    half = t.ppf(0.975, 39) * sd / math.sqrt(40)
    assert f"{100 * mean:.1f} ({_outward(mean - half, mean + half)})" in detail


def test_a_record_without_noise_beside_one_with_an_interval_gets_a_dash_and_empty_bounds() -> None:
    record, plain = scored_record(), make_record(n=40, label="plain")
    table = compare_table([record, plain])
    column = table.headers.index("noise score")
    assert cell_text(table.rows[1][column]) == "—" and table.rows[0][column].ci is not None
    rows = json.loads(render_stdout([record, plain], "json"))["rows"]
    assert rows[1]["noise score"] is rows[1]["noise score ci_low"] is rows[1]["noise score ci_high"] is None
    assert rows[0]["noise score ci_low"] < rows[0]["noise score"] < rows[0]["noise score ci_high"]


def cell_record(ratio: float, sparsity: float, seed: int, n: int = 40, draws: int = 1) -> EvalRecord:
    record = scored_record(n=n, draws=draws, label=f"r{ratio:g}-s{sparsity:g}", seed=seed)
    record.model["activation"] = "relu" if ratio == 1.0 else "kwta"
    record.model["kwta_ratio"] = None if ratio == 1.0 else ratio
    record.model["sweep_cell"] = {"kwta_ratio": ratio, "weight_sparsity": sparsity, "pruning_method": DENSE,
                                  "cell_id": record.label, "activation": record.model["activation"]}
    return record


def grid(n: int = 40) -> list[EvalRecord]:
    return [cell_record(1.0, 0.0, 0, n), cell_record(0.1, 0.0, 1, n)]


def test_noise_matrix_cells_carry_the_score_interval_in_every_form() -> None:
    records = grid()
    score = next(m for m in build_matrices(records) if m.noise)
    cell = score.get(0.1, 0.0)
    low, high = t_reference(records[1].noise[0].result["correct_counts"], 1)
    assert (cell.score_low, cell.score_high) == pytest.approx((low, high), abs=1e-6)
    assert (cell.ci_low, cell.ci_high) == pytest.approx((low / 120, high / 120), abs=1e-9)  # per image and level
    row = matrix_table(score, with_legend=False).rows[1]
    assert cell_text(row[1]) == f"{cell.score:g} ({math.floor(low)}–{math.ceil(high)})"
    long = [r for r in csv.DictReader(io.StringIO(render_table(long_table([score]), "csv")))]
    assert float(long[1]["correct ci_low"]) == pytest.approx(low, rel=1e-5)
    assert float(long[1]["accuracy ci_high (%)"]) == pytest.approx(100 * high / 120, rel=1e-5)
    assert "95% interval over the images" in " ".join(score.notes)


def test_table_matrix_adds_a_matrix_per_noise_level_but_the_clean_one(tmp_path, capsys) -> None:
    records = grid(n=10)  # below 30 samples: Wilson per level (one draw), no interval of the score
    assert [m.metric for m in build_matrices(records)] == ["clean", "noise numenta"]  # sweeps and reports: as before
    matrices = build_matrices(records, noise_levels=True)
    assert [m.metric for m in matrices] == ["clean", "noise numenta", "noise numenta level 0.25",
                                            "noise numenta level 0.5"]
    level = matrices[2]
    assert level.noise_level and not level.noise
    assert level.title == "noise numenta level 0.25 accuracy (no pruning, n=10)"
    counts = records[1].noise[0].result["correct_counts"][1]
    ci = binomtest(sum(counts), 10).proportion_ci(method="wilson")
    assert (level.get(0.1, 0.0).correct, level.get(0.1, 0.0).accuracy) == (sum(counts), sum(counts) / 10)
    assert (level.get(0.1, 0.0).ci_low, level.get(0.1, 0.0).ci_high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert not any(m.noise_level for group in matrices_by_point(matrices).values() for m in group)
    paths = []
    for record in records:
        paths.append(tmp_path / f"{record.label}.json")
        save_record(record, paths[-1])
    assert main(["table", *map(str, paths), "--matrix"]) == 0
    out = capsys.readouterr().out
    assert "noise numenta level 0.25 accuracy (no pruning, n=10)" in out and "level 0 accuracy" not in out
    assert f"{100 * sum(counts) / 10:.1f} ({_outward(ci.low, ci.high)})" in out
    assert render_records_as_matrices(records, "csv").count("noise numenta level 0.5,") == 2


def test_records_without_per_sample_counts_render_as_before() -> None:
    record = scored_record(store_counts=False)
    cell = overview_table([record]).rows[0][-2]
    assert cell.ci is None and cell_text(cell) == f"{record.noise_score():g}"
    detail, = [n for n in detail_table(record).notes if n.startswith("noise numenta")]
    assert "interval" not in detail
    assert "accuracy % per level " + " / ".join(f"{100 * a:.1f}" for a in record.noise[0].result["accuracy"]) in detail
    cells = [cell_record(1.0, 0.0, 0), cell_record(0.1, 0.0, 1)]
    for c in cells:
        del c.noise[0].result["correct_counts"]
    matrices = build_matrices(cells, noise_levels=True)
    texts = [cell_text(c) for m in matrices[1:] for row in matrix_table(m).rows for c in row[1:]]
    assert texts and not any("(" in text for text in texts)  # the score and the accuracies alone


def test_the_readmes_quickstart_interval_is_what_the_committed_quickstart_records_render() -> None:
    kwta = quickstart_records()[0]
    cell = overview_table([kwta]).rows[0][-2]
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert cell_text(cell) == "1539 (1467–1611)" and f"`{cell_text(cell)}` in the quickstart's noise score column" \
        in readme
    note, = [n for n in noise_score_notes([kwta]) if n.startswith("noise score:")]
    assert "per image and level: 70.0% (66.6–73.3)" in note and "(`kwta 70.0% (66.6–73.3)`)" in readme
