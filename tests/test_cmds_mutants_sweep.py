"""Mutation round on ``kwta-robust sweep`` (:mod:`kwta_robust.commands.sweep`): the dry run's cell states, the
failed-cell report and exit status, the notes and plots it writes, executor flags. A two-cell grid of tiny CNNs
on the 8×8 digits (tiny configs from :mod:`tests.test_sweep`); expectations read back from the files written."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from kwta_robust.cli import main
from kwta_robust.commands import sweep as sweep_command
from kwta_robust.errors import ConfigError
from tests.test_sweep import fail_pruned_training, tiny_config, write_config

TWO_CELLS = {"kwta_ratios": [1.0], "weight_sparsities": [0.0, 0.5], "pruning_methods": ["magnitude"]}


def test_a_failed_cell_is_named_in_the_printed_matrices_and_the_exit_status(tmp_path: Path, capsys,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path / "two.yaml", tiny_config(grid=TWO_CELLS, eval={**tiny_config()["eval"],
                                                                                    "noise": [], "n_examples": 8}))
    out = tmp_path / "out"
    fail_pruned_training(monkeypatch, "no memory")
    assert main(["sweep", str(path), "--out-dir", str(out), "--no-progress", "--no-plots"]) == 1
    captured = capsys.readouterr()
    note = "failed cell (no record, retried on the next run): relu-magnitude0.5: RuntimeError: no memory"
    assert note in captured.out and note in (out / "matrices.md").read_text()
    err = captured.err.strip().splitlines()
    assert err[0] == f"1 of 2 cells failed (retried on the next run; see {out / 'sweep.json'}):"
    assert err[1].startswith("  relu-magnitude0.5 (") and err[1].endswith("): RuntimeError: no memory")
    assert (out / "report.html").is_file() and not (out / "plots").exists()  # --no-plots: no heatmaps

    # the dry run: one cell finished, the other's checkpoint not there yet; the last run's status
    assert main(["sweep", str(path), "--out-dir", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("relu-dense ") and lines[0].endswith("[finished]")
    assert lines[1].startswith("relu-magnitude0.5 ") and lines[1].endswith("[to run]")
    assert lines[2] == f"2 cells; config valid; last run in {out}: failed"
    # a finished cell whose record is gone, its checkpoint kept: ready to evaluate
    manifest = json.loads((out / "sweep.json").read_text())
    done = next(c for c in manifest["cells"] if c["status"] == "done")
    (out / done["record"]).unlink()
    assert main(["sweep", str(path), "--out-dir", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("[checkpoint ready]")
    assert main(["sweep", str(path), "--out-dir", str(tmp_path / "new"), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "2 cells; config valid"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sweep_command.add_arguments(parser)
    return parser.parse_args(["cfg.yaml", *argv])


def test_executor_options_keep_only_the_flags_given() -> None:
    assert sweep_command.executor_options(_args()) == {}
    assert sweep_command.executor_options(_args("--gpus-per-cell", "0.5")) == {"gpus_per_cell": 0.5}
    assert sweep_command.executor_options(_args("--executor", "ray", "--ray-address", "auto",
                                                "--cpus-per-cell", "2")) == {"address": "auto", "cpus_per_cell": 2.0}
    with pytest.raises(ConfigError) as caught:
        sweep_command.executor_options(_args("--executor", "local", "--gpus-per-cell", "1"))
    assert str(caught.value) == "--gpus-per-cell: only with --executor ray (got --executor local)"


def test_ray_flags_with_executor_ray_on_a_local_config_pass_the_check(tmp_path: Path, capsys,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """--executor ray names the executor, so the flags are fine even where the config says local; the dry run
    lists the cells without starting Ray."""
    path = write_config(tmp_path / "s.yaml", tiny_config(grid=TWO_CELLS))
    assert main(["sweep", str(path), "--out-dir", str(tmp_path / "o"), "--dry-run", "--executor", "ray",
                 "--cpus-per-cell", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "2 cells; config valid"
