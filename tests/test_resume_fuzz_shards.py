"""Resuming sharded runs and compare's records after damage on disk: a parts folder that is a file, a part record
of another part, a complete record holding a unit twice at a sharded run's --out, a damaged record in compare's
--out-dir — each one line naming the path and the fix (exit 2, no traceback), nothing on disk lost."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from eval_helpers import make_record
from kwta_robust.cli import main
from kwta_robust.resume import stale_reason
from test_cli_eval import run_error, write_checkpoint, write_config

PART = {"scope": "attacks", "start": 0, "stop": 4, "threat": ["linf", 0.3]}


@pytest.mark.parametrize(("old_part", "new_part"), [
    ({**PART, "start": 2}, PART),  # its samples edited
    ({**PART, "threat": ["linf", 0.1]}, PART),  # another threat point's part under this name
    (PART, None),  # a part record at an unsharded run's --out
])
def test_a_part_record_resumes_only_as_the_same_part(old_part: dict, new_part: dict | None) -> None:
    """Before, ``dataset.part`` was not compared: a part record whose samples were edited was resumed and the merge
    then failed on a misleading cause ("the shards' clean predictions differ ... not deterministic"), and one at
    an unsharded run's --out was resumed into a record still marked as a part."""
    fresh = make_record(n=4)
    old = copy.deepcopy(fresh)
    old.dataset["part"] = old_part
    if new_part is not None:
        fresh.dataset["part"] = new_part
    assert stale_reason(old, fresh) == "holds a record of another part of a sharded run (dataset.part)"
    old.dataset["part"] = copy.deepcopy(new_part)
    if new_part is None:
        del old.dataset["part"]
    assert stale_reason(old, fresh) is None


@pytest.fixture()
def run(tmp_path: Path) -> dict:
    """A tiny checkpoint and config: 4 samples in 2 batches, enough for 2 shards."""
    ckpt = write_checkpoint(tmp_path / "m.pt")
    cfg = write_config(tmp_path / "c.yaml", n_examples=4, batch_size=2, noise=[])
    out = tmp_path / "r.json"
    return {"out": out, "argv": ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--no-progress"],
            "ckpt": ckpt, "cfg": cfg}


def test_a_parts_folder_that_is_a_file_is_one_line(run: dict, capsys: pytest.CaptureFixture) -> None:
    """Before: a raw ``FileExistsError`` from ``mkdir``."""
    folder = Path(f"{run['out']}.parts")
    folder.write_text("my notes")
    line = run_error(capsys, [*run["argv"], "--shards", "2", "--executor", "inline"])
    assert line == (f"error: --shards: {folder}, where this run keeps its parts, is not a folder; move it away or use "
                    "a new --out")
    assert folder.read_text() == "my notes" and not run["out"].exists()


def test_a_complete_record_holding_a_unit_twice_is_not_kept_by_a_sharded_run(run: dict,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """A sharded run returns a complete record of its config as it is: before, one holding a unit twice (or a
    unit the config does not plan) was kept, and printed, as this run's record."""
    assert main(run["argv"]) == 0
    capsys.readouterr()
    record = json.loads(run["out"].read_text())
    record["results"].append(copy.deepcopy(record["results"][0]))
    run["out"].write_text(json.dumps(record))
    line = run_error(capsys, [*run["argv"], "--shards", "2", "--executor", "inline"])
    assert line == (f"error: --out: {run['out']} cannot be resumed ({run['out']}: results hold two units of 'pgd' at "
                    "Linf 8/255; keep one of them); use a new --out or --no-resume")
    record["results"].pop()
    record["results"].append({**copy.deepcopy(record["results"][0]), "eps": 0.5, "eps_text": "0.5"})
    run["out"].write_text(json.dumps(record))
    line = run_error(capsys, [*run["argv"], "--shards", "2", "--executor", "inline"])
    assert line == (f"error: --out: {run['out']} holds a unit the config does not plan ('pgd' at Linf 0.5; another "
                    "config's, or edited); use a new --out or --no-resume")
    assert json.loads(run["out"].read_text()) == record  # refused, left as it was


def test_compare_refuses_a_damaged_record_in_its_out_dir(run: dict, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """``compare --out-dir`` resumes each model's record there: one with per-sample flags cut short is one line
    naming --out-dir (before: ``error: completed[0]: expected flags of shape [4], got (1,)`` from deep in the
    cascade, after the record had been saved again)."""
    other = write_checkpoint(tmp_path / "other.pt", seed=1)
    out_dir = tmp_path / "cmp"
    argv = ["compare", str(run["ckpt"]), str(other), "--config", str(run["cfg"]), "--out-dir", str(out_dir),
            "--no-progress", "--no-transfer", "--labels", "a,b"]
    assert main(argv) == 0
    capsys.readouterr()
    path = out_dir / "a.json"
    record = json.loads(path.read_text())
    record["results"][0]["flags"] = [1]
    path.write_text(json.dumps(record))
    before = path.read_bytes()
    line = run_error(capsys, argv)
    assert line.startswith(f"error: --out-dir: {path} cannot be resumed ({path}: results[0] (pgd, Linf 8/255): flags: "
                           "1 entries for 4 samples); use a new --out-dir or ")
    assert path.read_bytes() == before
