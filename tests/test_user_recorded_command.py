"""The command a record keeps (``provenance.command``, shown in the HTML report's provenance) runs again as it
reads: evaluate's CHECKPOINT and compare's MODELs are positional arguments, not ``--checkpoint=`` options the parser
refuses, and a repeated option (``--bpda-layer``) is written once per value, not as a Python list."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from kwta_robust.cli import build_parser, main
from kwta_robust.commands.common import command_line
from kwta_robust.results import load_record
from tests.test_model_identity import _setup


def _round_trip(argv: list[str]) -> tuple[list[str], dict, dict]:
    """The recorded line for ``argv`` and the options the parser reads from ``argv`` and from that line."""
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    recorded = command_line(args)
    assert recorded[0] == "kwta-robust"
    again = parser.parse_args(recorded[1:])  # before: "error: unrecognized arguments: --checkpoint=..." (exit 2)
    return recorded, vars(args), vars(again)


@pytest.mark.parametrize("argv,expected", [
    (["evaluate", "net.pt", "--config", "c.yaml", "--bpda-layer", "features.2", "--bpda-layer", "Sparsify*"],
     ["kwta-robust", "evaluate", "--bpda-layer=features.2", "--bpda-layer=Sparsify*", "--config=c.yaml", "--format=md",
      "net.pt"]),
    (["compare", "a.pt", "pkg.mod:make_relu=relu.pt", "--config", "c.yaml", "--out-dir", "cmp"],
     ["kwta-robust", "compare", "--config=c.yaml", "--format=md", "--out-dir=cmp", "a.pt",
      "pkg.mod:make_relu=relu.pt"]),
    (["evaluate", "--config", "c.yaml", "--", "-net.pt"],
     ["kwta-robust", "evaluate", "--config=c.yaml", "--format=md", "--", "-net.pt"]),
])
def test_the_recorded_command_parses_to_the_same_options(argv: list[str], expected: list[str]) -> None:
    recorded, first, again = _round_trip(argv)
    assert recorded == expected
    assert again == first


def test_a_records_command_runs_again_and_resumes_the_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    argv, out = _setup(tmp_path, monkeypatch, "user_command_gate")
    whole = tmp_path / "whole.pt"
    torch.save(importlib.import_module("user_command_gate").make(), whole)
    config = argv[argv.index("--config") + 1]
    assert main(["evaluate", str(whole), "--allow-pickle", "--config", config, "--out", str(out),
                 "--no-progress"]) == 0
    command = load_record(out).provenance["command"]
    assert command == ["kwta-robust", "evaluate", "--allow-pickle", f"--config={config}", "--format=md",
                       "--no-progress", f"--out={out}", str(whole)]
    first = load_record(out)
    assert "resumed_at" not in first.provenance
    assert main(command[1:]) == 0  # the line the record keeps, run as it reads (before: exit 2)
    assert "error:" not in capsys.readouterr().err
    again = load_record(out)
    # resumed, not recomputed: this run's start is appended to ``resumed_at``, the first run's start is kept
    assert len(again.provenance.get("resumed_at", [])) == 1
    assert again.provenance["started_at"] == first.provenance["started_at"]
    assert again.results[0].flags == first.results[0].flags
