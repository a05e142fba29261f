"""``compare --factory-kwargs LABEL=JSON``: each factory model its own arguments (a kWTA factory model beside its
ReLU twin built by the same factory with ``activation='relu'``). Before, one ``--factory-kwargs`` went to every
factory model, so one factory taking ``activation`` could not build both; the shared form still works."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from kwta_robust.cli import main
from kwta_robust.layers import KWTA
from test_cli_eval import run_error

MODULE = "test_cmp50_factory_kwargs"


def make_net(activation: str) -> nn.Module:
    """The kWTA net (hidden 16) or its ReLU twin (hidden 8: the other's weights do not load into it)."""
    torch.manual_seed(0)
    hidden = 16 if activation == "kwta" else 8
    act = KWTA(ratio=0.25) if activation == "kwta" else nn.ReLU()
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), act, nn.Linear(hidden, 10))


def make_plain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _setup(tmp_path: Path) -> tuple[str, list[str]]:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 4, "batch_size": 4, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 1}}],
    }))
    models = []
    for activation in ("kwta", "relu"):
        torch.save(make_net(activation).state_dict(), tmp_path / f"{activation}.pt")
        models.append(f"{MODULE}:make_net={tmp_path / f'{activation}.pt'}")
    return str(config), models


def test_each_factory_model_gets_its_own_arguments_by_label(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config, models = _setup(tmp_path)
    argv = ["compare", *models, "--factory-kwargs", 'kwta={"activation": "kwta"}', "--factory-kwargs",
            'relu={"activation": "relu"}', "--config", config, "--out-dir", str(tmp_path / "cmp"), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| kwta " in out and "| relu " in out
    # the shared form beside one model's own: the shared arguments go to the others
    assert main(["compare", *models, "--factory-kwargs", '{"activation": "kwta"}', "--factory-kwargs",
                 'relu={"activation": "relu"}', "--config", config, "--out-dir", str(tmp_path / "c2"),
                 "--dry-run"]) == 0
    # --labels name the models, and so the per-model arguments
    assert main(["compare", *models, "--labels", "a,b", "--factory-kwargs", 'a={"activation": "kwta"}',
                 "--factory-kwargs", 'b={"activation": "relu"}', "--config", config, "--out-dir",
                 str(tmp_path / "c3"), "--dry-run"]) == 0


def test_per_model_arguments_that_match_no_model_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config, models = _setup(tmp_path)
    common = ["--config", config, "--out-dir", str(tmp_path / "cmp"), "--dry-run"]
    line = run_error(capsys, ["compare", *models, "--factory-kwargs", 'kwat={"activation": "kwta"}', *common])
    assert line == ("error: --factory-kwargs kwat=...: 'kwat' names no model; the factory models' labels are kwta, "
                    "relu (--labels names them)")
    line = run_error(capsys, ["compare", *models, "--factory-kwargs", 'relu={"activation": "relu"}',
                              "--factory-kwargs", 'relu={}', *common])
    assert line == "error: --factory-kwargs: relu=... is given twice; give each label once"
    line = run_error(capsys, ["compare", *models, "--factory-kwargs", 'relu=["relu"]', *common])
    assert line == "error: --factory-kwargs relu=...: expected a JSON object like '{\"num_classes\": 10}'"
    # the shared form alone: the factory refusing it is told how to give it its own
    torch.save(make_plain().state_dict(), tmp_path / "plain.pt")
    plain = f"{MODULE}:make_plain={tmp_path / 'plain.pt'}"
    line = run_error(capsys, ["compare", models[0], plain, "--factory-kwargs", '{"activation": "kwta"}', *common])
    assert line.startswith("error: MODEL 2 (plain): model factory 'test_cmp50_factory_kwargs:make_plain': unknown "
                           "argument 'activation'")
    assert line.endswith("give this one its own, --factory-kwargs 'plain={...}' (its label, '=', a JSON object; "
                         "'plain={}' for none), or give the factories the same arguments")
    assert main(["compare", models[0], plain, "--factory-kwargs", '{"activation": "kwta"}', "--factory-kwargs",
                 "plain={}", *common]) == 0  # the fix it names


def test_per_model_arguments_for_a_checkpoint_model_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config, models = _setup(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"")  # refused before any model loads
    line = run_error(capsys, ["compare", models[0], str(tmp_path / "model.pt"), "--factory-kwargs",
                              'kwta={"activation": "kwta"}', "--factory-kwargs", "model={}", "--config", config,
                              "--out-dir", str(tmp_path / "cmp"), "--dry-run"])
    assert line == ("error: --factory-kwargs model=...: 'model' is not a package.module:function model; the factory "
                    "models' labels are kwta (--labels names them)")
