"""Robustness matrices from records: placement (sweep cells and plain records), values with intervals, shared
dense column, errors; Markdown / CSV / LaTeX rendering; heatmap and robust-vs-eps PNGs; ``table --matrix``."""

from __future__ import annotations

import csv
import io
import json
import re
from html import unescape
from pathlib import Path

import matplotlib.image
import pytest

from eval_helpers import SEED_ONLY_HASH, make_record, make_result, rehash
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.formats import render_matrices
from kwta_robust.html_sweep import SweepRun, sweep_section
from kwta_robust.matrix import (
    CLEAN,
    DENSE,
    MARK,
    WORST,
    build_matrices,
    cell_coordinates,
    long_table,
    matrix_table,
)
from kwta_robust.numbers import percent_text
from kwta_robust.plots import heatmap_figure, write_plots
from kwta_robust.report import Cell, cell_text
from kwta_robust.results import Accuracy, Flag, save_record

N = 10


def flags_with(robust: int, broken: int) -> list[int]:
    return [1] * robust + [0] * broken + [-1] * (N - robust - broken)


def cell_record(ratio: float, sparsity: float, method: str, pgd_robust: dict[float, int], *, bpda_broken: int = 0,
                measured: float | None = None, sweep: bool = True, status: str = "complete"):
    """A record at one grid cell: PGD keeps ``pgd_robust[eps]`` of N, BPDA then breaks ``bpda_broken`` of those."""
    results = []
    for eps, robust in pgd_robust.items():
        results.append(make_result("pgd", flags_with(robust, N - robust), eps=eps))
        left = max(robust - bpda_broken, 0)
        results.append(make_result("bpda", [1] * left + [0] * (robust - left) + [-1] * (N - robust), eps=eps,
                                   position=1, cumulative=True, kind="bpda"))
    label = f"r{ratio:g}-{method}{sparsity:g}"
    rec = make_record(results, label=label)
    rec.status = status
    rec.model["activation"] = "relu" if ratio == 1.0 else "kwta"
    rec.model["kwta_ratio"] = None if ratio == 1.0 else ratio
    rec.model["weight_sparsity"] = {"overall": sparsity if measured is None else measured}
    if sweep:
        rec.model["sweep_cell"] = {"kwta_ratio": ratio, "weight_sparsity": sparsity, "pruning_method": method,
                                   "cell_id": label, "activation": rec.model["activation"]}
    elif method != DENSE:
        rec.model["training"] = {"pruning": {"method": method, "target_sparsity": sparsity}}
    return rec


def grid_records(sweep: bool = True):
    """2 ratios (ReLU, 0.1) x sparsity {0, 0.8} magnitude, eps 0.1 / 0.3; robust counts differ per cell."""
    return [
        cell_record(1.0, 0.0, DENSE, {0.1: 6, 0.3: 1}, sweep=sweep),
        cell_record(1.0, 0.8, "magnitude", {0.1: 5, 0.3: 0}, measured=0.7995, sweep=sweep),
        cell_record(0.1, 0.0, DENSE, {0.1: 9, 0.3: 8}, bpda_broken=7, sweep=sweep),
        cell_record(0.1, 0.8, "magnitude", {0.1: 8, 0.3: 7}, bpda_broken=7, measured=0.8004, sweep=sweep),
    ]


def test_matrix_placement_values_and_order() -> None:
    matrices = build_matrices(grid_records())
    assert [(m.metric, m.eps) for m in matrices] == [
        (CLEAN, None), (WORST, 0.1), (WORST, 0.3), ("pgd", 0.1), ("pgd", 0.3), ("bpda", 0.1), ("bpda", 0.3)]
    pgd = matrices[3]
    assert pgd.ratios == [1.0, 0.1] and pgd.sparsities == [0.0, 0.8] and pgd.pruning_method == "magnitude"
    assert pgd.get(1.0, 0.0) == Accuracy.of(6, N) and pgd.get(0.1, 0.8) == Accuracy.of(8, N)
    worst = matrices[1]  # the per-sample worst case: PGD then BPDA (make_record's worst case)
    assert worst.get(0.1, 0.0) == Accuracy.of(9 - 7, N) and worst.get(1.0, 0.8) == Accuracy.of(5, N)
    assert matrices[5].cumulative and not pgd.cumulative and matrices[5].title.startswith("+bpda")
    assert matrices[0].get(0.1, 0.8) == Accuracy.of(N, N) and matrices[0].n == N


def test_plain_records_are_placed_by_what_they_measured() -> None:
    coords = [cell_coordinates(r) for r in grid_records(sweep=False)]
    assert [(c.kwta_ratio, c.weight_sparsity, c.pruning_method) for c in coords] == [
        (1.0, 0.0, DENSE), (1.0, 0.8, "magnitude"), (0.1, 0.0, DENSE), (0.1, 0.8, "magnitude")]
    assert coords[3].measured_sparsity == 0.8004 and coords[0].activation == "relu"
    by_sweep = build_matrices(grid_records())
    by_measure = build_matrices(grid_records(sweep=False))
    assert [m.cells for m in by_measure] == [m.cells for m in by_sweep]
    mixed = grid_records(sweep=False)[0]
    mixed.model["activation"] = "mixed"
    with pytest.raises(ConfigError, match="activation 'mixed'"):
        cell_coordinates(mixed)
    damaged = grid_records()[0]
    damaged.model["sweep_cell"] = {"kwta_ratio": "abc", "pruning_method": "none"}
    with pytest.raises(ConfigError, match="model.sweep_cell is malformed .* needs kwta_ratio, weight_sparsity"):
        cell_coordinates(damaged)
    keeps_all = grid_records(sweep=False)[2]  # a kWTA model keeping every unit is the identity, not the ReLU twin
    keeps_all.model["kwta_ratio"] = 1.0
    with pytest.raises(ConfigError, match="is a kWTA model at k/N 1.0, which keeps every unit"):
        cell_coordinates(keeps_all)


def test_dense_column_is_shared_by_every_method() -> None:
    records = grid_records() + [cell_record(0.1, 0.8, "rigl", {0.1: 3, 0.3: 2})]
    matrices = build_matrices(records)
    methods = {m.pruning_method for m in matrices}
    assert methods == {"magnitude", "rigl"}
    rigl = next(m for m in matrices if m.pruning_method == "rigl" and m.metric == "pgd" and m.eps == 0.1)
    mag = next(m for m in matrices if m.pruning_method == "magnitude" and m.metric == "pgd" and m.eps == 0.1)
    assert rigl.get(0.1, 0.0) == mag.get(0.1, 0.0) == Accuracy.of(9, N)
    assert rigl.get(0.1, 0.8) == Accuracy.of(3, N) and mag.get(0.1, 0.8) == Accuracy.of(8, N)
    assert rigl.get(1.0, 0.8) is None  # no ReLU rigl record: an empty cell
    text = render_matrices([rigl], "wide")
    row = next(line for line in text.splitlines() if line.startswith("| 1.0 (ReLU twin) |"))
    assert row.endswith("| — |")


def test_bad_record_sets() -> None:
    with pytest.raises(ConfigError, match="both sit at k/N=0.1, weight sparsity 0.8"):
        build_matrices(grid_records() + [cell_record(0.1, 0.8, "magnitude", {0.1: 1})])
    with pytest.raises(ConfigError, match="is partial"):
        build_matrices([cell_record(1.0, 0.0, DENSE, {0.1: 1}, status="partial")])
    with pytest.raises(ConfigError, match="no records"):
        build_matrices([])


def test_markdown_latex_and_csv_rendering() -> None:
    records = grid_records()
    records[2].diagnostics = [Flag("adaptive-beats-pgd", "critical", "bpda broke 7 PGD survivors"),
                              Flag("zero-gradients", "info", "-")]
    matrices = build_matrices(records, title="demo", notes=["failed cell: x"])
    md = render_matrices(matrices, "wide")
    assert "critical diagnostics flags" in md and "r0.1-none0 (adaptive-beats-pgd)" in md and "zero-grad" not in md
    assert md.count("| k/N \\ weight sparsity | 0 (dense) | 0.8 |") == len(matrices)
    assert "### demo: pgd robust accuracy at Linf 0.1 (magnitude pruning, n=10)" in md
    assert "1.0 = the ReLU twin" in md and "- failed cell: x" in md
    assert "measured weight sparsity (magnitude) of all conv/linear weights, per column: 0: 0.0%, 0.8: 80.0%" in md
    pgd_row = next(line for line in md.split("### demo: pgd robust accuracy at Linf 0.1")[1].splitlines()
                   if line.startswith("| 0.1 |"))
    assert pgd_row == f"| 0.1 | {cell_text(Cell.acc(Accuracy.of(9, N)))}! | {cell_text(Cell.acc(Accuracy.of(8, N)))} |"
    tex = render_matrices(matrices, "latex")
    assert tex.count(r"\begin{tabular}{lrr}") == len(matrices) and r"\item failed cell: x" in tex
    assert r"1.0 (ReLU twin) & 60.0\," in tex.split(r"pgd robust accuracy at Linf 0.1")[1]
    rows = list(csv.DictReader(io.StringIO(render_matrices(matrices, "csv"))))
    assert len(rows) == len(matrices) * 4
    row = next(r for r in rows if r["metric"] == "pgd" and r["eps"] == "0.3" and r["kwta_ratio"] == "0.1"
               and r["weight_sparsity"] == "0.8")
    acc = Accuracy.of(7, N)
    assert float(row["accuracy (%)"]) == pytest.approx(100 * acc.accuracy)
    assert float(row["accuracy ci_low (%)"]) == pytest.approx(100 * acc.ci_low, rel=1e-5)
    assert row["activation"] == "kwta" and float(row["measured_weight_sparsity"]) == 0.8004
    assert row["critical_flags"] == "" and {r["critical_flags"] for r in rows if r["record"] == "r0.1-none0"} == {
        "adaptive-beats-pgd"}
    assert len(long_table(matrices).rows) == len(rows)
    table = matrix_table(matrices[0])  # standalone: carries its own legend
    assert any("ReLU twin" in n for n in table.notes)


def test_heatmaps_and_curves_are_real_pngs(tmp_path) -> None:
    matrices = [m for m in build_matrices(grid_records()) if m.metric in (CLEAN, WORST)]
    paths = write_plots(matrices, tmp_path / "plots")  # a heatmap per matrix, one robust-vs-eps plot
    assert len(paths) == len(matrices) + 1 and len(set(paths)) == len(paths)
    assert sorted(p.name for p in paths)[-1] == "robust_vs_eps_worst-case_linf_magnitude.png"
    for path in paths:
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 150 and image.shape[1] > 200 and image[..., :3].std() > 0.05
    assert not list((tmp_path / "plots").glob(".*.tmp"))


def test_heatmaps_mark_flagged_and_incomparable_cells_as_the_tables_do() -> None:
    m = next(m for m in build_matrices(grid_records()) if m.metric == WORST and m.eps == 0.3)
    flagged, other = sorted(m.cells)[:2]
    m.flags = {key: (["adaptive-beats-pgd"] if key == flagged else []) for key in m.cells}
    m.warnings[other] = ["evaluated with another evaluation config than the other cells"]
    fig = heatmap_figure(m)
    values = [t.get_text().split("\n")[0] for t in fig.axes[0].texts]  # a cell: value and marks, then its interval
    assert f"{percent_text(m.cells[flagged].accuracy)} !" in values
    assert f"{percent_text(m.cells[other].accuracy)}{MARK}" in values
    assert sum(v.endswith(("!", MARK)) for v in values) == 2  # those two cells only
    assert [t.get_text() for t in fig.texts] == ["! critical diagnostics flags (e.g. gradient masking); * not "
                                                 "comparable with the other cells: see the matrices' legend"]
    m.warnings.clear()
    m.flags.clear()
    plain = heatmap_figure(m)
    assert not plain.texts
    assert not any(t.get_text().split("\n")[0].endswith(("!", MARK)) for t in plain.axes[0].texts)


def test_md_matrices_fit_120_columns_and_say_what_wide_says() -> None:
    """``md`` (the terminal's) prints the matrices aligned, the legend and notes wrapped within 120 columns (they
    were one line of up to 420 characters each); ``wide`` (a sweep's ``matrices.md``) keeps GitHub Markdown: the
    same titles, cells and notes."""
    records = grid_records()
    records[1].config, records[1].config_hash = {"seed": 1}, "def"  # a marked cell and its long warning
    matrices = build_matrices(records, title="demo", notes=["failed cell: x"])
    md, wide = render_matrices(matrices, "md"), render_matrices(matrices, "wide")
    assert max(map(len, md.splitlines())) <= 120 < max(map(len, wide.splitlines()))
    unwrapped = md.replace("\n  ", " ")
    notes = [line for line in wide.splitlines() if line.startswith("- ")]
    assert len(notes) >= 5 and all(note in unwrapped.splitlines() for note in notes)

    def rows(text: str) -> list[str]:
        return [re.sub(r" +", " ", line) for line in text.splitlines() if line.startswith(("| ", "### "))]
    assert rows(md) == rows(wide) and md.count("* |") == wide.count("* |") == len(matrices)


def test_table_command_renders_matrices(tmp_path, capsys) -> None:
    paths = []
    for rec in grid_records(sweep=False):
        paths.append(tmp_path / f"{rec.label}.json")
        save_record(rec, paths[-1])
    assert main(["table", *map(str, paths), "--matrix"]) == 0
    out = capsys.readouterr().out  # md: aligned, within 120 columns
    assert re.search(r"^\| 1\.0 \(ReLU twin\) +\| ", out, re.M)
    assert "worst case robust accuracy at Linf 0.3 (magnitude pruning, n=10)" in out
    assert max(map(len, out.splitlines())) <= 120
    assert main(["table", *map(str, paths), "--matrix", "--format", "csv", "--out", str(tmp_path / "m.csv")]) == 0
    assert len((tmp_path / "m.csv").read_text().strip().splitlines()) == 1 + 7 * 4
    twin = tmp_path / "twin.json"  # a copy: the same file twice is refused before (test_cli_eval)
    twin.write_bytes(paths[0].read_bytes())
    assert main(["table", str(paths[0]), str(twin), "--matrix"]) == 2  # two records on one cell
    assert "error: table --matrix: records" in capsys.readouterr().err


def test_cells_on_different_numbers_of_samples_show_each_cells_n() -> None:
    """A matrix whose cells were evaluated on 10 and 12 samples printed no n at all (the title drops it when the cells
    disagree): the title now gives the range and a note each cell's n."""
    records = grid_records()[:3]
    wider = make_record([make_result("pgd", [1] * 9 + [0] * 3)], label="r0.1-wide")
    wider.model.update({"activation": "kwta", "kwta_ratio": 0.1, "weight_sparsity": {"overall": 0.8},
                        "sweep_cell": {"kwta_ratio": 0.1, "weight_sparsity": 0.8, "pruning_method": "magnitude",
                                       "cell_id": "r0.1-wide", "activation": "kwta"}})
    md = render_matrices(build_matrices(records + [wider]), "wide")
    assert "### clean accuracy (magnitude pruning, n=10–12: differs between cells)" in md
    assert ("samples per cell (n differs between cells): k/N 1.0 (ReLU twin) × 0 (dense): 10, k/N 1.0 (ReLU twin) × "
            "0.8: 10, k/N 0.1 × 0 (dense): 10, k/N 0.1 × 0.8: 12") in md
    same = render_matrices(build_matrices(grid_records()), "wide")
    assert "n=10)" in same and "samples per cell" not in same


def test_a_worst_case_over_other_attacks_is_marked_in_every_format() -> None:
    """Before: a cell whose worst case was over PGD alone (or a compare record's, with its transfer attacks too) sat
    in the worst-case matrix beside full-suite cells with nothing said: the configs' hashes alike (a compare record)
    gave no warning, and CSV and JSON never carried one. Now the cell is marked and each format says why."""
    records = grid_records()
    pgd_only = make_record([make_result("pgd", flags_with(6, 4), eps=eps) for eps in (0.1, 0.3)], label="r0.1-pgd")
    pgd_only.model.update(records[2].model, label="r0.1-pgd")
    records[2] = pgd_only
    matrices = build_matrices(records)
    worst = next(m for m in matrices if m.metric == WORST and m.eps == 0.1)
    assert worst.get(0.1, 0.0) == Accuracy.of(6, N) and list(worst.warnings) == [(0.1, 0.0)]
    assert not any(m.warnings for m in matrices if m.metric != WORST)  # the same config: only the worst case differs
    why = "worst case over pgd; the other cells' over pgd, bpda"
    md = render_matrices(matrices, "wide")
    assert f"- warning: * in the worst case at Linf 0.1: k/N 0.1 × 0 (dense) r0.1-pgd: {why}" in md
    at_01 = md.split("worst case robust accuracy at Linf 0.1")[1]
    assert f"| 0.1 | {cell_text(Cell.acc(Accuracy.of(6, N)))}* |" in at_01
    assert md.count("* |") == 2  # the two worst-case matrices; pgd's and clean accuracy's cells are comparable
    assert "60.0\\,{\\scriptsize[31.2, 83.2]}*" in render_matrices(matrices, "latex")
    rows = list(csv.DictReader(io.StringIO(render_matrices(matrices, "csv"))))
    assert {(r["metric"], r["eps"]) for r in rows if r["warnings"]} == {(WORST, "0.1"), (WORST, "0.3")}
    assert all(r["warnings"] == why for r in rows if r["warnings"]) and rows[0]["warnings"] == ""
    notes = json.loads(render_matrices(matrices, "json"))["notes"]
    assert any(n.startswith("warning: * in the worst case at Linf 0.3") for n in notes)
    html = unescape(str(sweep_section(SweepRun(Path("sweep"), "demo", records=records)).body))  # heatmap, tooltip
    assert "60.0*" in html and f"not comparable: {why}" in html and "warning: * in the worst case at Linf 0.1" in html


def test_cells_evaluated_with_another_config_are_named() -> None:
    """Before: one line said that some cells ran other configs, not which cells or what differed."""
    records = grid_records()
    records[1].config, records[1].config_hash = {"seed": 1}, "def"
    matrices = build_matrices(records)
    assert all(list(m.warnings) == [(1.0, 0.8)] for m in matrices)  # every number of that cell
    md = render_matrices(matrices, "wide")
    assert ("- warning: * = not comparable with the other cells: k/N 1.0 (ReLU twin) × 0.8 (magnitude) "
            "r1-magnitude0.8: evaluated with another evaluation config than the other cells (differs in: seed)") in md
    assert md.count("* |") == len(matrices) and "different evaluation configs" not in md


def test_two_records_on_one_cell_name_their_files(tmp_path, capsys) -> None:
    """Records of one's own models (and a sweep folder with two suites' records) share labels: the error said
    ``records 'model' and 'model' both sit at ...``. Now it names the files."""
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    save_record(grid_records()[0], first)
    save_record(grid_records()[0], second)
    assert main(["table", str(first), str(second), "--matrix"]) == 2
    err = capsys.readouterr().err
    # (table reads them with load_records, which tells records of one label apart by their paths)
    assert f"records 'r1-none0 ({first})' and 'r1-none0 ({second})' both sit at k/N=1.0 (ReLU twin)" in err
    assert "different evaluation configs" not in err
    other = grid_records()[0]  # a sweep folder whose cells were evaluated with a second suite: eval-<hash>.json each
    other.config = {"seed": 1}  # (its config hashed as a run writes it: an edited config is refused before)
    save_record(rehash(other), second)
    assert main(["table", str(first), str(second), "--matrix"]) == 2
    err = capsys.readouterr().err
    assert (f"per cell (they ran different evaluation configs, hash {SEED_ONLY_HASH[:10]} / {other.config_hash[:10]}: "
            "pass the records of one") in err
