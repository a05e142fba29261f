"""A record whose ``config`` was edited by hand while its ``config_hash`` was left as it was
(:func:`kwta_robust.record_checks.check_config_hash`, :mod:`kwta_robust.config_digest`): before, ``table`` rendered
it, the matrices (``table --matrix``, ``report --sweep``) placed it, ``diff`` compared it and a sweep reused it as
a finished cell; now each refuses it in one line naming the file, the field and the fix. Records the harness wrote
(its own hash, or the hash of versions that hashed the device too) still load."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path

import pytest

import kwta_robust.sweep.cells as cells
from eval_helpers import make_record, make_result, rehash
from kwta_robust.cli import main
from kwta_robust.config_digest import LEGACY_UNHASHED_KEYS, config_digest
from kwta_robust.record_checks import check_record
from kwta_robust.results import RecordError, load_record, save_record
from test_html_report import _sweep_dir
from test_matrix import grid_records
from test_sweep_mutants import EVAL, _finished

EDITED = "config_hash does not match config: the record was edited; re-run the evaluation"
FIXTURES = Path(__file__).parent / "fixtures" / "quickstart"


def edit_config(path: Path) -> None:
    """Change the stored config's seed, leaving ``config_hash`` as it was (a hand edit)."""
    data = json.loads(path.read_text())
    data["config"]["seed"] = 7
    path.write_text(json.dumps(data))


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_table_refuses_a_record_whose_config_was_edited(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "r.json"
    save_record(make_record([make_result("pgd", [1, 0, 1, 0])]), path)
    assert main(["table", str(path)]) == 0  # as written: rendered
    capsys.readouterr()
    edit_config(path)
    assert one_line_error(capsys, ["table", str(path)]) == f"error: {path}: {EDITED}"


def test_table_matrix_refuses_an_edited_cell_record(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = []
    for i, record in enumerate(grid_records()):  # the ReLU twin's row and a kWTA row, dense and pruned
        paths.append(tmp_path / f"cell{i}.json")
        save_record(record, paths[-1])
    argv = ["table", *map(str, paths), "--matrix"]
    assert main(argv) == 0
    capsys.readouterr()
    edit_config(paths[2])
    assert one_line_error(capsys, argv) == f"error: {paths[2]}: {EDITED}"


def test_report_sweep_refuses_an_edited_cell_record(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    directory = _sweep_dir(tmp_path)
    argv = ["report", "--sweep", str(directory), "--out", str(tmp_path / "r.html")]
    assert main(argv) == 0
    capsys.readouterr()
    edited = directory / "cells" / "cell1" / "eval-abc.json"
    edit_config(edited)
    assert one_line_error(capsys, argv) == f"error: {edited}: {EDITED}"


def test_diff_refuses_an_edited_record(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    save_record(make_record([make_result("pgd", [1, 0, 1, 0])]), first)
    save_record(make_record([make_result("pgd", [1, 0, 1, 0])]), second)
    edit_config(second)  # would read as one difference, config.seed, of two records of one hash
    assert one_line_error(capsys, ["diff", str(first), str(second)]) == f"error: {second}: {EDITED}"


def test_a_sweep_does_not_reuse_a_cell_record_whose_config_was_edited_to_the_cells(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The record of another evaluation config (4 samples), its config edited to the cell's: the sweep compared only
    the stored config with the cell's, so it kept the 4-sample numbers as the cell's finished evaluation."""
    plan, record = _finished(tmp_path)
    other = rehash(dataclasses.replace(copy.deepcopy(record), config={**EVAL, "n_examples": 4}))
    other.config = dict(plan.eval)  # the edit; the hash stays the 4-sample config's
    save_record(other, plan.record_path)
    with caplog.at_level(logging.WARNING, logger="kwta_robust.sweep.cells"):
        assert cells.finished_record(plan) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"{plan.label}: unreadable record, the cell is evaluated again ({plan.record_path}: {EDITED})"]


@pytest.mark.parametrize("name", ["kwta.json", "relu.json"])
def test_records_the_quickstart_wrote_still_load(name: str) -> None:
    check_record(load_record(FIXTURES / name), name)  # raises on a mismatch


def test_a_record_hashed_as_earlier_versions_did_still_loads() -> None:
    """Versions before e63d42a hashed the device too: their records name their config as well."""
    record = make_record([make_result("pgd", [1, 0])])
    record.config = {"seed": 0, "device": "cpu", "description": "d"}
    record.config_hash = config_digest(record.config, LEGACY_UNHASHED_KEYS)
    check_record(record, "old.json")
    record.config["device"] = "cuda"  # the hashed device edited
    with pytest.raises(RecordError, match=f"^old.json: {EDITED}$"):
        check_record(record, "old.json")


def test_the_description_and_device_are_not_part_of_the_hash() -> None:
    """A run resumed on another device rewrites ``config.device`` under the same hash; the description is free
    text: neither is an edit of the evaluation."""
    record = rehash(make_record([make_result("pgd", [1, 0])]))
    record.config = {**record.config, "device": "cuda", "description": "reworded"}
    check_record(record, "r.json")
