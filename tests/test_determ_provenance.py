"""A record names torch's determinism, cuDNN and TF32 settings (``provenance.determinism``), as they were when the
run started: a Python-API caller or a model's module may change them, and on a GPU they change the numbers (TF32:
about 1e-3 relative). ``diff`` names a difference there with its cause; a run resumed under other settings warns
and lists them (``resumed_determinism``), as a resume on another thread count does; a record written before the
field still renders, diffs and resumes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

import pytest
import torch

from eval_helpers import unfinish_record
from kwta_robust.api import evaluate_model
from kwta_robust.cli import main
from tests.test_reproducibility import CONFIG, Stateful, toy_data

#: torch's settings in a fresh process (the record of a run under them), written out by hand.
DEFAULTS = {"deterministic_algorithms": False, "deterministic_warn_only": False, "cudnn_deterministic": False,
            "cudnn_benchmark": False, "cudnn_allow_tf32": True, "cuda_matmul_allow_tf32": False,
            "float32_matmul_precision": "highest"}
#: What :func:`changed_settings` sets ('high' precision turns TF32 matrix products on).
CHANGED = {**DEFAULTS, "deterministic_algorithms": True, "deterministic_warn_only": True, "cudnn_benchmark": True,
           "cuda_matmul_allow_tf32": True, "float32_matmul_precision": "high"}


@pytest.fixture(autouse=True)
def default_settings() -> Iterator[None]:
    """Every test starts from torch's defaults, whatever an earlier test left set, and gets the settings it found
    back after: no test here depends on the order the files run in."""
    found = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(found[0], warn_only=found[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = found[2], found[3]
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = found[4], found[5]
        torch.set_float32_matmul_precision(found[6])


@pytest.fixture
def changed_settings() -> Iterator[None]:
    """torch's settings changed as a caller might change them, and put back after the test."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = False
        torch.set_float32_matmul_precision("highest")


def run(out: Path) -> dict:
    """A small evaluation written to ``out``, read back as JSON."""
    x, y = toy_data(8)
    evaluate_model(Stateful().eval(), CONFIG, x, y, out_path=out, threads=1)
    return json.loads(out.read_text())


def test_a_record_holds_the_settings_of_its_run(tmp_path: Path, changed_settings: None) -> None:
    """The settings read back from the file are the ones set before the run, not torch's defaults."""
    assert run(tmp_path / "changed.json")["provenance"]["determinism"] == CHANGED


def test_a_record_of_the_defaults_holds_them(tmp_path: Path) -> None:
    assert run(tmp_path / "default.json")["provenance"]["determinism"] == DEFAULTS


def test_diff_names_other_settings_with_their_cause(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    default = tmp_path / "default.json"
    run(default)
    torch.backends.cudnn.benchmark = True
    try:
        run(tmp_path / "benchmark.json")
    finally:
        torch.backends.cudnn.benchmark = False
    assert main(["diff", str(default), str(tmp_path / "benchmark.json")]) == 1
    out = capsys.readouterr().out
    assert "provenance.determinism.cudnn_benchmark: False != True  (torch's determinism, cuDNN and TF32 settings " \
           "choose other GPU kernels" in out
    assert "float32_matmul_precision" not in out  # only what differs


def test_a_run_resumed_under_other_settings_warns_and_lists_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
    """Not refused (as another thread count is not): the first run's settings stay, the resuming run's are listed,
    a warning names what changed, and ``diff`` explains the difference from an uninterrupted run."""
    first, resumed = tmp_path / "first.json", tmp_path / "resumed.json"
    run(first)
    resumed.write_bytes(first.read_bytes())
    unfinish_record(resumed)  # units left to compute (a complete record computes none: nothing to warn about)
    torch.backends.cudnn.benchmark = True
    try:
        with caplog.at_level(logging.WARNING, logger="kwta_robust"):
            record = run(resumed)
    finally:
        torch.backends.cudnn.benchmark = False
    prov = record["provenance"]
    assert len(prov["resumed_at"]) == 1  # resumed, not started afresh
    assert prov["determinism"] == DEFAULTS and prov["resumed_determinism"] == [{**DEFAULTS, "cudnn_benchmark": True}]
    assert "other torch determinism settings (cudnn_benchmark False -> True)" in caplog.text
    assert main(["diff", str(first), str(resumed)]) == 1
    assert "provenance.resumed_determinism: only in the second  (resumed under other torch determinism" \
           in capsys.readouterr().out
    same = tmp_path / "same.json"
    same.write_bytes(first.read_bytes())
    unfinish_record(same)
    assert run(same)["provenance"]["resumed_determinism"] == [DEFAULTS]  # resumed under the first run's settings
    assert main(["diff", str(first), str(same)]) == 0  # the same result as the uninterrupted run


def test_an_older_record_renders_diffs_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    data = run(new)
    del data["provenance"]["determinism"]  # as a record written before the field
    old.write_text(json.dumps(data))
    assert main(["report", str(old), "--out", str(tmp_path / "old.html")]) == 0
    assert main(["report", str(old), "--out", str(tmp_path / "old.md")]) == 0
    assert main(["table", str(old)]) == 0
    capsys.readouterr()
    assert main(["diff", str(old), str(new)]) == 1
    assert capsys.readouterr().out.count("provenance.determinism: only in the second  (torch's determinism") == 1
    resumed = run(old)
    assert len(resumed["provenance"]["resumed_at"]) == 1 and resumed["results"] == data["results"]
    assert "determinism" not in resumed["provenance"]  # the first run's settings are unknown: none is made up
    assert resumed["provenance"]["resumed_determinism"] == [DEFAULTS]
