"""Noise-score matrices (kwta_robust.noise_matrix): a noise probe's score across k/N × weight sparsity, one matrix per
probe settings, no Wilson interval, in every format; the attack matrices unchanged."""

from __future__ import annotations

import csv
import io
import re

from test_matrix import grid_records
from kwta_robust.cli import main
from kwta_robust.formats import render_matrices
from kwta_robust.formats.latex import to_latex
from kwta_robust.formats.md import to_markdown
from kwta_robust.html_sweep import _heatmap
from kwta_robust.matrix import build_matrices, long_table, matrix_table, matrices_by_point
from kwta_robust.plots import heatmap_figure
from kwta_robust.report import cell_text
from kwta_robust.results import NoiseResult, save_record

LEVELS = [0.0, 0.25, 0.5]


def probe(score: float, value: float = 1.0, draws: int = 1) -> NoiseResult:
    return NoiseResult("numenta", list(LEVELS), draws, 0,
                       {"noise_score": score, "num_samples": 10, "params": {"value": value}}, 0.1)


def noisy_records(scores=(21.0, 18.0, 27.0, 24.5)):
    records = grid_records()  # ReLU / k/N 0.1 × dense / magnitude 0.8, n = 10
    for record, score in zip(records, scores):
        record.noise.append(probe(score))
    return records


def test_noise_matrix_holds_each_cells_score_without_interval() -> None:
    matrices = build_matrices(noisy_records())
    plain = build_matrices(grid_records())
    assert [m.metric for m in matrices] == [m.metric for m in plain] + ["noise numenta"]
    noise = matrices[-1]
    assert noise.noise and noise.norm is None and noise.title == "noise numenta score (magnitude pruning, n=10)"
    cell = noise.get(0.1, 0.8)
    assert (cell.score, cell.n, cell.levels) == (24.5, 10, 3) and abs(cell.accuracy - 24.5 / 30) < 1e-12
    table = matrix_table(noise, with_legend=False)
    assert [[cell_text(c) for c in row] for row in table.rows] == [["1.0 (ReLU twin)", "21", "18"],
                                                                   ["0.1", "27", "24.5"]]
    assert all(c.ci is None for row in table.rows for c in row)  # no Wilson interval
    assert ("noise numenta: noise score of the numenta probe (levels 0 / 0.25 / 0.5, 1 draw, noise pixel value 1, "
            "seed 0") in " ".join(noise.notes)
    assert not any(m.noise for group in matrices_by_point(matrices).values() for m in group)  # no eps curve


def test_attack_matrices_are_unchanged_by_a_noise_probe() -> None:
    old, new = build_matrices(grid_records()), build_matrices(noisy_records())
    assert len(new) == len(old) + 1
    for before, after in zip(old, new):
        tables = matrix_table(before, with_legend=False), matrix_table(after, with_legend=False)
        assert to_markdown(tables[0]) == to_markdown(tables[1]) and to_latex(tables[0]) == to_latex(tables[1])
    old_rows, new_rows = long_table(old).rows, long_table(new).rows
    assert [[cell_text(c) for c in row] for row in new_rows[:len(old_rows)]] == \
        [[cell_text(c) for c in row] for row in old_rows] and len(new_rows) == len(old_rows) + 4


def test_probes_with_other_settings_are_not_mixed() -> None:
    records = noisy_records()
    records[3].noise[0] = probe(7.0, value=0.5)  # another pixel value: other noise
    matrices = [m for m in build_matrices(records) if m.noise]
    assert [m.metric for m in matrices] == ["noise numenta [1]", "noise numenta [2]"]
    first, second = matrices
    assert sorted(first.cells) == [(0.1, 0.0), (1.0, 0.0), (1.0, 0.8)] and first.get(0.1, 0.8) is None
    assert list(second.cells) == [(0.1, 0.8)] and second.get(0.1, 0.8).score == 7.0
    assert "2 settings, other noise each: a matrix per settings, never mixed" in " ".join(second.notes)
    assert "noise pixel value 0.5" in " ".join(second.notes) and "noise pixel value 0.5" not in " ".join(first.notes)
    assert [[cell_text(c) for c in row[1:]] for row in matrix_table(first).rows] == [["21", "18"], ["27", "—"]]


def test_long_table_csv_and_heatmaps_carry_the_score() -> None:
    matrices = build_matrices(noisy_records())
    rows = list(csv.DictReader(io.StringIO(render_matrices(matrices, "csv"))))
    noise = [r for r in rows if r["metric"] == "noise numenta"]
    assert [(r["kwta_ratio"], r["weight_sparsity"], r["n"], r["correct"]) for r in noise] == [
        ("1", "0", "10", "21"), ("1", "0.8", "10", "18"), ("0.1", "0", "10", "27"), ("0.1", "0.8", "10", "24.5")]
    assert [r["accuracy (%)"] for r in noise] == ["70", "60", "90", "81.6666666667"]  # per image and level (12 digits)
    assert all(r["accuracy ci_low (%)"] == r["accuracy ci_high (%)"] == "" for r in noise)  # no interval
    svg = str(_heatmap(matrices[-1]))
    assert "noise score 24.5 on n=10, 81.7% per image and level" in svg and "nan" not in svg
    figure = heatmap_figure(matrices[-1])
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert "24.5\n81.7%" in texts and not any("nan" in t for t in texts)
    assert "noise numenta score" in render_matrices(matrices, "latex")


def test_table_matrix_command_prints_the_noise_matrix(tmp_path, capsys) -> None:
    paths = []
    for i, record in enumerate(grid_records(sweep=False)):
        counts = [[1] * 10, [1] * (9 - i) + [0] * (1 + i), [1] * (5 - i) + [0] * (5 + i)]  # [levels][n], 1 draw
        score = sum(map(sum, counts))
        record.noise.append(NoiseResult("numenta", list(LEVELS), 1, 0, {
            "kind": "numenta", "levels": list(LEVELS), "draws": 1, "seed": 0, "params": {"value": 1.0},
            "num_samples": 10, "accuracy": [sum(row) / 10 for row in counts], "draw_accuracy": [[sum(row) / 10]
                                                                                                for row in counts],
            "correct_counts": counts, "total_correct": score, "noise_score": score,
            "noise_score_normalized": score / 30}, 0.1))
        paths.append(tmp_path / f"{record.label}.json")
        save_record(record, paths[-1])
    assert main(["table", *map(str, paths), "--matrix"]) == 0
    out = capsys.readouterr().out
    assert "noise numenta score (magnitude pruning, n=10)" in out and "else the score is shown alone" in out  # n < 30
    assert re.search(r"^\| 1\.0 \(ReLU twin\) +\| +24 \| +22 \|$", out, re.M)  # 10+9+5, 10+8+4
    assert re.search(r"^\| 0\.1 +\| +20 \| +18 \|$", out, re.M)
