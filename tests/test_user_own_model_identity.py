"""A researcher's own model, end to end: a whole pickled module given as CHECKPOINT (``torch.save(model)``,
``--allow-pickle``) carries its code's digest like a factory's model, so a record of the module before its gate's
code was edited is not resumed; and ``diff`` of two runs on one weights file copied to another folder is the same
result, as for a checkpoint (the path is volatile, the weights' ``state_sha256`` is compared)."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
import torch

from kwta_robust.cli import main
from kwta_robust.results import load_record
from tests.test_model_identity import _error, _setup


def test_a_pickled_module_checkpoint_is_resumed_only_for_the_same_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    argv, out = _setup(tmp_path, monkeypatch, "user_pickled_gate")
    module = importlib.import_module("user_pickled_gate")
    whole = tmp_path / "whole.pt"
    torch.save(module.make(), whole)  # what researchers do: the module, pickled with its classes' names
    config = argv[argv.index("--config") + 1]
    argv = ["evaluate", str(whole), "--allow-pickle", "--config", config, "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    record = load_record(out)
    assert record.model["training"] == {"pickled_module": "Sequential"}
    digest = record.model["model_source_sha256"]
    assert isinstance(digest, str) and len(digest) == 64  # before: None, so no code was ever compared
    assert main(argv) == 0  # the same file and code: resumed as it was
    assert load_record(out).model["model_source_sha256"] == digest
    assert len(load_record(out).provenance.get("resumed_at", [])) == 1  # resumed, not recomputed
    capsys.readouterr()
    # the gate's backward rewritten: the pickle (weights, file digest) is unchanged, every gradient attack is not
    source = tmp_path / "user_pickled_gate.py"
    source.write_text(source.read_text() + "\n# the gate's backward rewritten after the run\n")
    line = _error(capsys, argv)
    assert line == f"error: --out: {out} holds a record of other model code (a source file of its modules " \
                   "changed); use a new --out or --no-resume"
    assert load_record(out).model["model_source_sha256"] == digest  # the record is left as it was


def test_diff_of_one_weights_file_copied_elsewhere_is_the_same_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    argv, out = _setup(tmp_path, monkeypatch, "user_copied_gate")
    module = importlib.import_module("user_copied_gate")
    here, there = tmp_path / "net.pt", tmp_path / "elsewhere" / "net.pt"
    torch.save(module.make().state_dict(), here)
    there.parent.mkdir()
    shutil.copy(here, there)
    records = []
    for weights, name in ((here, "a.json"), (there, "b.json")):
        argv[argv.index("--out") + 1] = str(tmp_path / name)
        assert main([*argv, "--weights", str(weights)]) == 0
        records.append(tmp_path / name)
    a, b = (load_record(path).model for path in records)
    assert (a["training"]["weights"], b["training"]["weights"]) == (str(here), str(there))
    assert a["state_sha256"] == b["state_sha256"]
    capsys.readouterr()
    # before: exit 1, "1 field(s) differ: model.training.weights: '.../net.pt' != '.../elsewhere/net.pt'"
    assert main(["diff", str(records[0]), str(records[1])]) == 0
    assert capsys.readouterr().out.startswith("same result: every field is identical but the volatile ones")
    # other weights at the same path are still another model
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in module.make().state_dict().items()}, there)
    argv[argv.index("--out") + 1] = str(tmp_path / "c.json")
    assert main([*argv, "--weights", str(there)]) == 0
    capsys.readouterr()
    assert main(["diff", str(records[1]), str(tmp_path / "c.json")]) == 1
    assert "model.state_sha256:" in capsys.readouterr().out
