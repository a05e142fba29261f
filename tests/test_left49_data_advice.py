"""A model that cannot run on (or does not fit) the data is told how to give it other data: the evaluation config's
``dataset:`` or ``--data FILE`` (evaluate, compare), the training config's ``dataset:`` or ``--dataset`` (train).
Before, the line ended "evaluate it on the data it was built for" (or "... the data set it was trained for") and
named no way to do so."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.errors import ConfigError
from kwta_robust.model_checks import probe_model
from test_cli_eval import run_error, write_config

EVAL_HOW = "(dataset: in the evaluation config, or --data FILE in evaluate and compare)"


def make_colour_mlp() -> nn.Module:
    """A model for [N, 3, 32, 32] images: mnist5k's [N, 1, 28, 28] fail in its first Linear."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


def make_two_class_mlp() -> nn.Module:
    """A model with 2 outputs: mnist5k has 10 classes."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 2))


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_evaluate_and_compare_name_the_config_dataset_and_data_option(tmp_path: Path, capsys, command) -> None:
    cfg = write_config(tmp_path / "c.yaml", attacks=["fgsm"], noise=[])
    models = (["--model-factory", "test_left49_data_advice:make_colour_mlp"] if command == "evaluate" else
              ["test_left49_data_advice:make_colour_mlp", "test_left49_data_advice:make_colour_mlp",
               "--labels", "a,b"])
    out = ["--out", str(tmp_path / "r.json")] if command == "evaluate" else ["--out-dir", str(tmp_path / "cmp")]
    line = run_error(capsys, [command, *models, "--config", str(cfg), *out, "--no-progress"])
    assert "cannot run on mnist5k inputs [N, 1, 28, 28]: RuntimeError:" in line
    assert line.endswith(f"; evaluate it on the data it was built for {EVAL_HOW}, or fix module 1 if these are "
                         "its inputs"), line


def test_a_model_with_other_classes_is_told_the_same_way(tmp_path: Path, capsys) -> None:
    cfg = write_config(tmp_path / "c.yaml", attacks=["fgsm"], noise=[])
    line = run_error(capsys, ["evaluate", "--model-factory", "test_left49_data_advice:make_two_class_mlp",
                              "--config", str(cfg), "--out", str(tmp_path / "r.json"), "--no-progress"])
    assert line.endswith(f"has 2 outputs but mnist5k has 10 classes; evaluate it on the data it was built for "
                         f"{EVAL_HOW}"), line


def test_the_python_api_default_is_the_evaluation_advice() -> None:
    with pytest.raises(ConfigError) as info:
        probe_model(make_colour_mlp(), torch.rand(2, 1, 28, 28), 10, "model m", data_name="mnist5k")
    assert str(info.value).endswith(f"evaluate it on the data it was built for {EVAL_HOW}, or fix module 1 if these "
                                    "are its inputs")


def test_train_names_its_dataset_option(tmp_path: Path, capsys, monkeypatch) -> None:
    """``train`` probes the model it built on two training samples: a model (here: a factory replaced by one for
    colour images) that cannot take them is told ``--dataset``, not the evaluation config or ``--data``."""
    import kwta_robust.training.run as run

    monkeypatch.setattr(run, "build_model", lambda spec, where: make_colour_mlp())
    line = run_error(capsys, ["train", "--dataset", "mnist5k", "--arch", "mlp", "--epochs", "0",
                              "--out", str(tmp_path / "m.pt")])
    assert "cannot run on mnist5k inputs [N, 1, 28, 28]" in line
    assert line.endswith("; train it on data it fits (dataset: in the training config, or --dataset in train), or "
                         "fix module 1 if these are its inputs"), line
    assert not (tmp_path / "m.pt").exists()
