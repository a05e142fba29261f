"""``sweep --dry-run`` refuses what the run refuses, with the run's line (the fuzz round of the dry-run plan against
the real run): an ``--out-dir`` with a NUL byte or a 300-byte name (both were a raw ValueError / OSError traceback),
one whose nearest existing parent is a file or cannot be written (the dry run listed the cells, the run refused), and
a folder another sweep is writing (the dry run listed the cells, the run stopped at its lock). A dry run writes
nothing, also where it refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kwta_robust.sweep.cells as cells
from kwta_robust.cli import main
from kwta_robust.locks import OutputLock
from test_dry_run import files
from test_sweep import write_config
from test_sweep_fuzz import ONE_CELL, small_config


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A one-cell sweep config (tmp_path/s.yaml) whose cell must not train: every test's sweep is refused or dry."""
    def refuse(cfg):
        raise AssertionError("a cell trained although the sweep's folder was refused")

    monkeypatch.setattr(cells, "run_training", refuse)
    return write_config(tmp_path / "s.yaml", small_config(ONE_CELL))


def sweep(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str], str]:
    """Exit status, the `error:` lines and stdout of one `sweep` command (never a traceback)."""
    rc = main(["sweep", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, [line for line in err.splitlines() if line.startswith("error: ")], out


def dry_and_real(config: Path, out_dir: str, root: Path, capsys: pytest.CaptureFixture) -> list[str]:
    """The one `error:` line both the dry run and the run end with (exit status 2 each; the dry run wrote nothing)."""
    before = files(root)
    rc, dry, out = sweep([str(config), "--out-dir", out_dir, "--dry-run"], capsys)
    assert (rc, len(dry), out) == (2, 1, "")
    assert files(root) == before
    rc, real, _ = sweep([str(config), "--out-dir", out_dir, "--no-plots"], capsys)
    assert (rc, real) == (2, dry)
    return dry


@pytest.mark.parametrize("name,words", [
    ("o\x00x", "'o\\x00x' contains a NUL byte, which no file name can hold; give another path"),
    ("o" * 300, "holds a name of 300 bytes; file systems allow at most 255 bytes per name, give a shorter one"),
], ids=["nul", "300-bytes"])
def test_an_out_dir_no_file_system_takes_is_one_line_in_both(name: str, words: str, tmp_path: Path, config: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    [line] = dry_and_real(config, name, tmp_path, capsys)
    assert line.startswith("error: --out-dir: ") and line.endswith(words)


def test_an_out_dir_inside_a_file_is_refused_by_the_dry_run_too(tmp_path: Path, config: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "f").write_text("mine")
    [line] = dry_and_real(config, str(tmp_path / "f" / "o"), tmp_path, capsys)
    assert line == f"error: --out-dir: {tmp_path / 'f'} is a file, not a folder; choose a path outside it"
    assert (tmp_path / "f").read_text() == "mine"


def test_an_out_dir_that_cannot_be_written_is_refused_by_the_dry_run_too(tmp_path: Path, config: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    missing = "/proc/no-such-process-folder/o"  # /proc takes no new file, also for root
    assert not os.path.exists(os.path.dirname(missing))
    [line] = dry_and_real(config, missing, tmp_path, capsys)
    assert line == f"error: --out-dir: cannot write in {missing} (No such file or directory); choose a writable folder"


def test_a_folder_another_sweep_writes_is_the_run_s_lock_line(tmp_path: Path, config: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o"
    out.mkdir()
    with OutputLock(out / "sweep.json", "--out-dir"):
        [line] = dry_and_real(config, str(out), tmp_path, capsys)
    assert line.startswith(f"error: --out-dir: {out / 'sweep.json'} is in use by another kwta-robust run (pid "
                           f"{os.getpid()} on host ")
    assert line.endswith("; wait for it to finish or choose another path")
    assert not (out / "sweep.json").exists() and not (out / "cells").exists()  # neither run wrote a manifest


def test_a_free_folder_is_still_planned_and_left_empty(tmp_path: Path, config: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o"
    out.mkdir()
    rc, errors, printed = sweep([str(config), "--out-dir", str(out), "--dry-run"], capsys)
    assert (rc, errors) == (0, [])
    assert printed.splitlines()[-1] == "1 cells; config valid" and "[to run]" in printed.splitlines()[0]
    assert list(out.iterdir()) == []
