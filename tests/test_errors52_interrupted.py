"""On Ctrl-C or SIGTERM the CLI printed "interrupted: finished results are saved; re-run the same command to resume"
whatever was interrupted: a command that saves and resumes nothing (table, diff, report, plugins), an evaluation
stopped while loading, before its first record, quickstart while training its first model. It says so now only where
a re-run takes up saved work (each command's ``saved_work``); otherwise "interrupted: nothing was saved"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kwta_robust import cli, quickstart, runs

SAVED = "interrupted: finished results are saved; re-run the same command to resume"
NOTHING = "interrupted: nothing was saved"
CONFIG = {"dataset": "mnist5k", "n_examples": 4, "batch_size": 4, "device": "cpu",
          "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 1}}]}


def interrupted_line(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def interrupt(writes: Path | None = None) -> Any:
    """A stand-in for a command's work: it writes ``writes`` (the work saved so far), then is interrupted."""
    def work(*args: object, **kwargs: object) -> None:
        if writes is not None:
            writes.parent.mkdir(parents=True, exist_ok=True)
            writes.write_text("{}")
        raise KeyboardInterrupt
    return work


@pytest.mark.parametrize("argv", [["table", "no-such.json"], ["report", "no-such.json", "--out", "r.html"]])
def test_a_command_that_does_not_resume_saved_nothing(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    from kwta_robust.commands import report, table

    monkeypatch.setattr(table if argv[0] == "table" else report, "run", interrupt())
    assert interrupted_line(argv, capsys) == NOTHING


def test_evaluate_says_saved_only_where_its_record_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "r.json"
    argv = ["evaluate", str(tmp_path / "m.pt"), "--config", str(config), "--out", str(out), "--no-progress"]
    monkeypatch.setattr(runs, "evaluate_one", interrupt())  # stopped while loading: no record yet
    assert interrupted_line(argv, capsys) == NOTHING
    monkeypatch.setattr(runs, "evaluate_one", interrupt(tmp_path / "r.json.parts" / "whole-set.json"))  # sharded
    assert interrupted_line([*argv, "--shards", "2"], capsys) == SAVED
    monkeypatch.setattr(runs, "evaluate_one", interrupt(out))  # a unit finished: its record is saved
    assert interrupted_line(argv, capsys) == SAVED
    assert interrupted_line([*argv, "--no-resume"], capsys) == \
        "interrupted: finished results are saved; re-run the command without --no-resume to resume"


def test_evaluate_finds_its_default_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text(yaml.safe_dump(CONFIG))
    argv = ["evaluate", "m.pt", "--config", "c.yaml", "--no-progress"]
    monkeypatch.setattr(runs, "evaluate_one", interrupt(tmp_path / "runs" / "eval" / "other__c.json"))
    assert interrupted_line(argv, capsys) == NOTHING  # another model's record
    monkeypatch.setattr(runs, "evaluate_one", interrupt(tmp_path / "runs" / "eval" / "m__c.json"))
    assert interrupted_line(argv, capsys) == SAVED


def test_quickstart_interrupted_in_its_first_training_saved_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "q"
    monkeypatch.setattr(quickstart, "run_quickstart", interrupt())
    assert interrupted_line(["quickstart", "--out-dir", str(out), "--no-progress"], capsys) == NOTHING
    monkeypatch.setattr(quickstart, "run_quickstart", interrupt(out / "models" / "kwta.pt"))  # one model trained
    assert interrupted_line(["quickstart", "--out-dir", str(out), "--no-progress"], capsys) == SAVED


def test_a_sweep_says_saved_once_a_cell_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    from kwta_robust import sweep

    config = Path(__file__).resolve().parents[1] / "eval_configs" / "sweep_mnist5k_3x3.yaml"
    out = tmp_path / "s"
    monkeypatch.setattr(sweep, "run_sweep", interrupt())
    assert interrupted_line(["sweep", str(config), "--out-dir", str(out), "--no-progress"], capsys) == NOTHING
    monkeypatch.setattr(sweep, "run_sweep", interrupt(out / "cells" / "a-1" / "model.pt"))
    assert interrupted_line(["sweep", str(config), "--out-dir", str(out), "--no-progress"], capsys) == SAVED
