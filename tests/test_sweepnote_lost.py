"""A sweep cell the manifest (sweep.json) lists as done whose record was deleted, cut short or replaced by a partial
one: ``report --sweep`` dropped it and the matrices showed ``—`` as for a cell never run (a cut-short record
stopped the report). Now the cell is marked ``—*`` and a note names it, what the manifest says, what is on disk and
the fix; a cell listed as pending or failed keeps its plain ``—``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kwta_robust.cli import main
from test_sweep import write_config
from test_sweep_fuzz import small_config

GRID = {"kwta_ratios": [1.0, 0.25], "weight_sparsities": [0.0, 0.5], "pruning_methods": ["magnitude"]}
RECORD = "cells/{}/eval-{}.json"


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """A finished 2x2 sweep (8x8 digits, one epoch, 2-step PGD on 8 samples) and its intact Markdown report."""
    out = tmp_path_factory.mktemp("note")
    config = write_config(out / "s.yaml", small_config(GRID))
    assert main(["sweep", str(config), "--out-dir", str(out / "sweep"), "--no-progress", "--no-plots"]) == 0
    assert main(["report", "--sweep", str(out / "sweep"), "--out", str(out / "intact.md")]) == 0
    return out / "sweep", (out / "intact.md").read_text(encoding="utf-8")


def damaged(two_by_two, tmp_path: Path, label: str, damage, status: str | None = None) -> tuple[Path, str]:
    """A copy of the sweep whose cell ``label`` had ``damage`` done to its record (and, with ``status``, that
    status in the manifest); returns the copy and the record path the manifest lists."""
    folder = tmp_path / "sweep"
    shutil.copytree(two_by_two[0], folder)
    manifest = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    (cell,) = [c for c in manifest["cells"] if c["label"] == label]
    damage(folder / cell["record"])
    if status is not None:
        cell["status"] = status
        (folder / "sweep.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder, cell["record"]


def make_partial(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["status"] = "partial"
    path.write_text(json.dumps(data), encoding="utf-8")


def cut_short(path: Path) -> None:
    path.write_text(path.read_text(encoding="utf-8")[:300], encoding="utf-8")


def report(folder: Path, out: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["report", "--sweep", str(folder), "--out", str(out)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    return out.read_text(encoding="utf-8")


def row(text: str, title: str, first: str) -> str:
    """The row starting ``| first |`` of the Markdown matrix titled ``title``."""
    table = text.split(f"### tiny: {title}\n", 1)[1]
    return next(line for line in table.splitlines() if line.startswith(f"| {first} |"))


CASES = [
    ("relu-magnitude0.5", Path.unlink, "k/N 1.0 (ReLU twin) × 0.5 (magnitude)", "no record file is there"),
    ("kwta0.25-magnitude0.5", make_partial, "k/N 0.25 × 0.5 (magnitude)",
     "the record is partial (status not complete)"),
    ("kwta0.25-dense", cut_short, "k/N 0.25 × 0 (dense)", "the record file is not valid JSON"),
]


@pytest.mark.parametrize("label,damage,where,found", CASES, ids=[c[0] for c in CASES])
def test_a_lost_record_of_a_done_cell_is_marked_and_noted(label, damage, where, found, two_by_two, tmp_path,
                                                          capsys) -> None:
    folder, record = damaged(two_by_two, tmp_path, label, damage)
    note = (f"warning: —* = record lost: {where}: sweep.json lists cell {label} as done and evaluated but {found} at "
            f"{record}; re-evaluate it: kwta-robust sweep CONFIG --out-dir {folder}")
    text = report(folder, tmp_path / "r.md", capsys)
    assert f"- {note}\n" in text
    assert note in report(folder, tmp_path / "r.html", capsys)


def test_the_lost_cell_is_marked_and_the_other_numbers_do_not_move(two_by_two, tmp_path, capsys) -> None:
    folder, _ = damaged(two_by_two, tmp_path, "kwta0.25-dense", Path.unlink)
    text, intact = report(folder, tmp_path / "r.md", capsys), two_by_two[1]
    title = "worst case robust accuracy at Linf 0.1 (magnitude pruning, n=8)"
    assert row(text, title, "0.25").split(" | ")[1] == "—*"
    assert row(text, title, "0.25").split(" | ")[2] == row(intact, title, "0.25").split(" | ")[2]
    assert row(text, title, "1.0 (ReLU twin)") == row(intact, title, "1.0 (ReLU twin)")


@pytest.mark.parametrize("status", ["pending", "failed"])
def test_a_cell_not_run_or_failed_keeps_its_plain_dash(status, two_by_two, tmp_path, capsys) -> None:
    folder, _ = damaged(two_by_two, tmp_path, "kwta0.25-dense", Path.unlink, status=status)
    text = report(folder, tmp_path / "r.md", capsys)
    assert "record lost" not in text
    assert row(text, "worst case robust accuracy at Linf 0.1 (magnitude pruning, n=8)", "0.25").split(" | ")[1] == "—"
    assert "record lost" not in report(folder, tmp_path / "r.html", capsys)
