"""With ``data_root: null`` a torchvision set is read from ``$KWTA_ROBUST_DATA`` or the home cache, and the record
said nowhere which: its config holds ``null`` and nothing else named the folder. The record now keeps the folder it
resolved to in ``provenance.data_root`` (out of the config hash: the same evaluation wherever the data sit), the
report's provenance shows it, and a run resumed on the same files from another default folder notes it in
``provenance.resumed_data`` and its log names both folders (both were "the default root")."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.data import DATA_ROOT_ENV, load_dataset
from kwta_robust.evaluate import evaluate
from kwta_robust.record_diff import record_differences
from kwta_robust.results import load_record
from test_evaluate import register  # noqa: F401  (a fixture: registers a test attack for one test)
from test_resume_samples import Stopping, stopping, write_mnist  # noqa: F401  (stopping: a fixture)


def _config(data_root: str | None) -> EvalConfig:
    return EvalConfig.from_dict({
        "dataset": "mnist", "data_root": data_root, "n_examples": 8, "batch_size": 8, "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.1, 0.2]}], "attacks": ["test-stopping"],
        "diagnostics": {"enabled": False}})


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()


def test_the_default_folder_is_recorded_out_of_the_hash_and_shown(tmp_path: Path, stopping: type[Stopping],
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    model, root = _model(), tmp_path / "default-data"
    write_mnist(root, model, 0)
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    cfg = _config(None)
    record = evaluate(model, load_dataset("mnist", "test"), cfg, {}, out_path=tmp_path / "rec.json", progress=False)
    assert record.config["data_root"] is None and record.provenance["data_root"] == str(root.absolute())
    assert load_record(tmp_path / "rec.json").provenance["data_root"] == str(root.absolute())
    assert record.config_hash == cfg.config_hash() == _config(str(root)).config_hash()  # the place is not hashed
    named = evaluate(model, load_dataset("mnist", "test", root=root), _config(str(root)), {}, progress=False)
    assert named.provenance["data_root"] == str(root.absolute())
    assert record_differences(record.to_dict(), named.to_dict()) == []  # where the data sat is no difference
    capsys.readouterr()
    assert main(["report", str(tmp_path / "rec.json"), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"mnist (test), n=8, sample seed 0, read from {root.absolute()}" in page
    bundled = EvalConfig.from_dict({"dataset": "digits", "n_examples": 4, "batch_size": 4, "seed": 0,
                                    "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": ["test-stopping"],
                                    "diagnostics": {"enabled": False}})
    digits = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    assert "data_root" not in evaluate(digits, load_dataset("digits", "test"), bundled, {}, progress=False).provenance


def test_a_run_resumed_from_another_default_folder_notes_it(tmp_path: Path, stopping: type[Stopping],
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    model, first, second, out = _model(), tmp_path / "first", tmp_path / "second", tmp_path / "rec.json"
    write_mnist(first, model, 0)
    shutil.copytree(first, second)  # the same files elsewhere: the same evaluation
    monkeypatch.setenv(DATA_ROOT_ENV, str(first))
    stopping.stop["at"] = 0.2
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, load_dataset("mnist", "test"), _config(None), {}, out_path=out, progress=False)
    stopping.stop["at"], stopping.calls[:] = None, []
    monkeypatch.setenv(DATA_ROOT_ENV, str(second))
    with caplog.at_level(logging.INFO):
        done = evaluate(model, load_dataset("mnist", "test"), _config(None), {}, out_path=out, progress=False)
    assert done.status == "complete" and stopping.calls == [0.2]  # resumed: the unit at 0.1 kept
    assert done.provenance["data_root"] == str(first.absolute())  # the first run's, as its config is
    moved: Any = done.provenance["resumed_data"]
    assert [m["location"] for m in moved] == [str(second.absolute())]
    assert (f"its config names the data at the default root ({first.absolute()}), this run reads the same data "
            f"(checked by samples_sha256) at the default root ({second.absolute()}): resumed") in caplog.text
