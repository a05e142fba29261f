"""Sweep 52: ``sweep --dry-run`` names the cell folders of ``--out-dir`` trained with another recipe than the sweep
file says now (as a matrix of both would), without training; the machine-readable tables (JSON, CSV) write counts
as integers: a noise score and a noise level's correct answers whole over the draws (``6``, not ``6.0``)."""

from __future__ import annotations

import json

from eval_helpers import make_record
from kwta_robust.cli import main
from kwta_robust.formats import render_matrices, render_records, render_records_as_matrices
from kwta_robust.matrix import build_matrices
from kwta_robust.results import NoiseResult, save_record
from kwta_robust.sweep import SweepConfig, plan_cells
from test_sweep import count_work, tiny_config, write_config
from test_walk51c_matrix_recipe import trained_record


def _old_cell(out, name: str, training: dict) -> None:
    """A cell folder an earlier sweep file left in ``out``: its record holds the training config it was made with."""
    record = make_record(label=name)
    record.model["training"] = {"seed": training["seed"], "training": training}
    (out / "cells" / name).mkdir(parents=True)
    save_record(record, out / "cells" / name / "eval-0123456789.json")


def test_dry_run_names_cells_of_another_recipe(tmp_path, monkeypatch, capsys) -> None:
    train, evaluate = count_work(monkeypatch)
    path = write_config(tmp_path / "s.yaml", tiny_config())
    out = tmp_path / "o"
    plans = plan_cells(SweepConfig.from_dict(tiny_config()), out)
    _old_cell(out, "relu-dense-0000000000", {**plans[0].train, "seed": 1})
    _old_cell(out, "kwta0.25-dense-1111111111", {**plans[2].train, "seed": 1})
    _old_cell(out, "relu-dense-2222222222", {**plans[0].train, "epochs": 7})
    _old_cell(out, "relu-dense-3333333333", {**plans[0].train, "device": "cuda"})  # the same recipe: no note
    assert main(["sweep", str(path), "--out-dir", str(out), "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "another recipe" in line]
    words = ("trained with another recipe than the sweep file (in a matrix with its cells, their numbers mix the "
             "sparsity with the training; they are not reused): ")
    assert lines == [f"{out}: {words}seed 1 in cells/kwta0.25-dense-1111111111, cells/relu-dense-0000000000 (0 in "
                     "the sweep file)", f"{out}: {words}epochs 7 in cells/relu-dense-2222222222 (2 in the sweep file)"]
    assert train.calls == [] and evaluate.calls == []
    from kwta_robust.sweep.plans import other_recipes  # the library's: the notes of a later sweep file's plans
    assert other_recipes(plan_cells(SweepConfig.from_dict(tiny_config(train={**tiny_config()["train"], "seed": 1})),
                                    out), out)[0].endswith("epochs 7 in cells/relu-dense-2222222222 (2 in the sweep "
                                                           "file)")


def _noise_record(ratio: float, accuracy: list[float], draws: int, score: float):
    record = trained_record(ratio, 0.0)
    record.noise = [NoiseResult("numenta", [0.0, 0.1], draws, 0, {"kind": "numenta", "num_samples": 10,
                                                                  "accuracy": accuracy, "noise_score": score}, 0.5)]
    return record


def test_counts_are_integers_in_json_and_csv() -> None:
    records = [_noise_record(1.0, [0.4, 0.3], 2, 7.0), _noise_record(0.2, [0.4, 0.25], 2, 6.5)]  # over 2 draws
    rows = json.loads(render_records_as_matrices(records, "json"))["rows"]  # table --matrix
    counts = {(r["metric"], r["kwta_ratio"]): (r["n"], r["correct"]) for r in rows}
    assert counts[("clean", 1.0)] == (10, 10)
    assert counts[("noise numenta", 1.0)] == (10, 7) and counts[("noise numenta", 0.2)] == (10, 6.5)
    assert counts[("noise numenta level 0.1", 1.0)] == (10, 3) and counts[("noise numenta level 0.1", 0.2)] == (10, 2.5)
    assert all(type(r["correct"]) is int for r in rows if r["kwta_ratio"] == 1.0)  # 7, not 7.0
    assert all(isinstance(r["accuracy (%)"], float) for r in rows)  # percentages stay floats
    table = json.loads(render_records(records[:1], "json"))["rows"][0]  # evaluate's and table's tables too
    assert type(table["noise score"]) is int and type(table["noise numenta score"]) is int
    assert ",10,7,35," in render_matrices(build_matrices(records), "csv")  # CSV wrote the count as 7 already
