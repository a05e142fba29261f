"""The command line's own documentation: what ``--help`` says an option does, defaults to or accepts is what the
command does (the help lines the README audit of the ``--help`` texts found stale, and the behaviour they name)."""

from __future__ import annotations

import csv
import json
import io
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from kwta_robust.cli import build_parser, main
from kwta_robust.commands.train import config_from_args
from kwta_robust.config import load_config
from kwta_robust.quickstart import default_config_path
from kwta_robust.sweep.executors import available_executors
from kwta_robust.training import TrainConfig, default_out

ROOT = Path(__file__).resolve().parents[1]
RECORDS = [ROOT / "tests" / "fixtures" / "quickstart" / f"{name}.json" for name in ("kwta", "relu")]
SWEEP = ROOT / "eval_configs" / "sweep_mnist5k_3x3.yaml"


def option_help(command: str, option: str) -> str:
    """The help line of ``option`` of ``command`` as argparse holds it (before wrapping)."""
    parser, _ = build_parser([command])
    return parser.command_parsers[command]._option_string_actions[option].help


def test_train_out_help_spells_the_default_path_with_ratio_and_pruning() -> None:
    """``train --out``: the default path names the kWTA ratio (or k) and the pruning method and sparsity; the help
    said ``runs/<dataset>-<arch>-<activation>-<method>-seed<seed>.pt``, which no kWTA or pruned run writes."""
    text = option_help("train", "--out")
    assert "runs/<dataset>-<arch>-<activation>[-r<k_ratio>|-k<k>]-<method>[-<prune method>-s<sparsity>]-seed<seed>.pt" \
        in text
    kwta_pruned = TrainConfig.from_dict({"activation": {"name": "kwta", "k_ratio": 0.1}, "seed": 2,
                                         "pruning": {"method": "magnitude", "sparsity": 0.8}})
    assert str(default_out(kwta_pruned)) == "runs/mnist5k-cnn-kwta-r0.1-standard-magnitude-s0.8-seed2.pt"
    absolute_k = TrainConfig.from_dict({"dataset": "digits", "arch": "mlp", "activation": {"name": "kwta", "k": 3}})
    assert str(default_out(absolute_k)) == "runs/digits-mlp-kwta-k3-standard-seed0.pt"
    assert str(default_out(TrainConfig())) == "runs/mnist5k-cnn-relu-standard-seed0.pt"


def test_train_config_help_names_a_training_config(capsys: pytest.CaptureFixture) -> None:
    """``train --config`` names a training YAML (``eval_configs/train_*.yaml``); the help said
    ``eval_configs/*.yaml``, most of which are evaluation configs that ``train`` refuses."""
    example = "eval_configs/train_cnn_kwta.yaml"
    assert example in option_help("train", "--config")
    parser, _ = build_parser(["train"])
    cfg = config_from_args(parser.parse_args(["train", "--config", str(ROOT / example), "--seed", "4"]))
    assert (cfg.activation.name, cfg.activation.k_ratio, cfg.seed) == ("kwta", 0.1, 4)  # the flag overrides the key
    assert main(["train", "--config", str(ROOT / "eval_configs" / "quick.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config: unknown key 'description'; valid keys: dataset,") and "Traceback" not in err


def test_table_wide_layout_in_md_has_a_column_per_record(capsys: pytest.CaptureFixture) -> None:
    """``table --layout wide`` (the default) in ``md`` (the default format): a summary row per record, then per
    threat point a table whose columns are the records; in CSV a row per record. The help said only "one row per
    record"."""
    assert "md: a row per record, then a table per threat point with a column per record" in \
        option_help("table", "--layout")
    assert main(["table", *map(str, RECORDS)]) == 0
    out = capsys.readouterr().out
    assert "| Linf 0.1     |             kwta |             relu |" in out.splitlines()
    assert [line.split("|")[1].strip() for line in out.splitlines()[2:4]] == ["kwta", "relu"]
    assert main(["table", *map(str, RECORDS), "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert [row[0] for row in rows[1:]] == ["kwta", "relu"]


def _stderr_of(flags: list[str], out: Path) -> str:
    run = subprocess.run([sys.executable, "-m", "kwta_robust.cli", *flags, "table", str(RECORDS[0]), "--out",
                          str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stderr


def test_the_root_level_is_info_debug_with_vv_and_q_hides_info(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The root logger's level: info by default and with one ``-v`` (which opens only the project's own loggers,
    tests/test_report_verbose.py), debug with ``-vv``, warning with ``-q``."""
    assert "-vv every library's too" in build_parser([])[0]._option_string_actions["--verbose"].help
    levels: list[int] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: levels.append(kwargs["level"]))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # the command line replaces it
    for flags in ([], ["-v"], ["-vv"], ["-q"]):
        assert main([*flags, "table", str(RECORDS[0]), "--out", str(tmp_path / "t.md")]) == 0
    assert levels == [logging.INFO, logging.INFO, logging.DEBUG, logging.WARNING]
    written = f"INFO kwta_robust.commands.table: table written to {tmp_path / 'u.md'}\n"
    assert _stderr_of([], tmp_path / "u.md") == written  # the default's one info line, as a user sees it


def test_sweep_executor_help_names_every_built_in_executor(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``sweep --executor`` takes every registered executor (the help named local and ray only); a dry run with
    ``inline`` or ``pool`` validates the config and lists the 9 cells."""
    text = option_help("sweep", "--executor")
    assert {"inline", "local", "pool", "ray"} <= set(available_executors())
    for name in ("inline", "local", "pool", "ray"):
        assert name in text
    for name in ("inline", "pool"):
        assert main(["sweep", str(SWEEP), "--executor", name, "--workers", "2", "--dry-run",
                     "--out-dir", str(tmp_path / name)]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "9 cells; config valid"
        assert not (tmp_path / name).exists()  # a dry run writes nothing
    assert main(["sweep", str(SWEEP), "--executor", "nosuch", "--dry-run", "--out-dir", str(tmp_path / "x")]) == 2
    assert "known executors: inline, local, pool, ray" in capsys.readouterr().err


def test_quickstart_n_examples_help_names_the_suite_it_counts() -> None:
    """``quickstart --n-examples``: 200 is the n_examples of the default suite (another --config has its own)."""
    assert "(200 in eval_configs/quickstart.yaml)" in option_help("quickstart", "--n-examples")
    parser, _ = build_parser(["quickstart"])
    effective = [load_config(default_config_path(), n_examples=parser.parse_args(["quickstart", *flags]).n_examples)
                 .n_examples for flags in ([], ["--n-examples", "50"])]  # what commands/quickstart.run loads
    assert effective == [200, 50]  # without the flag the suite's own count; the flag overrides it


def test_diff_ignores_the_checkpoint_path_but_not_a_data_file_path(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """``diff`` skips the checkpoint's path and the command line, not every path: the help said "but wall times
    and paths", while a ``--data`` file's path (the record's data set name) is compared."""
    description = build_parser([])[0].command_parsers["diff"].description
    assert "a checkpoint's or --weights file's path and digest" in description
    record = json.loads(RECORDS[0].read_text())
    moved = json.loads(RECORDS[0].read_text())
    moved["model"]["source"] = "/elsewhere/kwta-cnn.pt"
    moved["provenance"]["command"] = ["kwta-robust", "quickstart", "--out-dir=/elsewhere"]
    other_data = json.loads(RECORDS[0].read_text())
    other_data["dataset"]["name"] = "/elsewhere/data.pt"
    paths = {}
    for name, data in (("a", record), ("moved", moved), ("data", other_data)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    assert main(["diff", str(paths["a"]), str(paths["moved"])]) == 0
    assert capsys.readouterr().out.startswith("same result: every field is identical but the volatile ones")
    assert main(["diff", str(paths["a"]), str(paths["data"])]) == 1
    assert capsys.readouterr().out.splitlines() == ["1 field(s) differ:",
                                                    "  dataset.name: 'mnist5k' != '/elsewhere/data.pt'"]


def test_sweep_out_dir_defaults_to_runs_sweeps_config_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    """``sweep --out-dir`` defaults to ``runs/sweeps/<config name>`` under the working folder (the config's
    ``name``, not its file name)."""
    assert "(default runs/sweeps/<config name>)" in option_help("sweep", "--out-dir")
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(SWEEP), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and all(f" {tmp_path}/runs/sweeps/mnist5k-3x3/cells/" in line for line in lines[:9])
    assert not (tmp_path / "runs").exists()
