"""What a one-line error or note names, where the value came from (session 53 leftovers).

(1) A sweep config's ``train.device`` / ``eval.device`` a run cannot use was named ``device`` (``error: device:
'cuda:0' requested but CUDA is not available; set device: cpu or auto in the config``), while the sweep's other keys
are named by their section (``eval.batch_size``, ``train.epochs``); now ``train.device`` / ``eval.device``, with
the fix in those words; ``sweep --device`` (which gives both) is still named by the flag. (2) ``train``'s refusal of
``test_fraction`` with a registered data set ended ``remove it (--test-fraction)`` where the config file's key gave
it; now the key or the flag is named in front only. (3) ``train --k-ratio 0.1`` with the default relu activation was
accepted and trained a ReLU model (the ratio ignored); now refused in one line naming the fix (``--activation kwta``);
a config file's ``activation: {name: relu, k_ratio: 0.1}`` is warned of and trains as before (a config may keep a
ratio while its activation is switched to relu; tests/test_train.py reads one). (4) The ``non-finite-logits`` note
named only ``--save-adversarial``; it names the Python API's ``save_adversarial=`` too."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import torch
import yaml

from kwta_robust.api import evaluate_model
from kwta_robust.commands import train as train_command
from tests.test_cifar10_user import error_line
from tests.test_non_finite_logits import NaNOffGrid, grid_data
from tests.test_sweep import tiny_config, write_config

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal of CUDA on a machine without it")
BASE = {"dataset": "digits", "arch": "mlp", "epochs": 1}


def sweep_error(capsys: pytest.CaptureFixture, tmp_path: Path, section: str, device: str, *flags: str) -> str:
    data = tiny_config()
    data[section] = {**data[section], "device": device}
    path = write_config(tmp_path / "s.yaml", data)
    return error_line(capsys, ["sweep", str(path), "--out-dir", str(tmp_path / "o"), "--dry-run", *flags])


@NO_CUDA
@pytest.mark.parametrize("section", ["train", "eval"])
def test_a_sweep_configs_device_without_cuda_names_its_section(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               section: str) -> None:
    # before: "error: device: 'cuda:0' requested but CUDA is not available; set device: cpu or auto in the config"
    assert sweep_error(capsys, tmp_path, section, "cuda:0") == (
        f"error: {section}.device: 'cuda:0' requested but CUDA is not available; set {section}.device: cpu or auto "
        "in the sweep config")
    # the flag gives both sections' device: named by the flag, its fix in the flag's words, as before
    assert sweep_error(capsys, tmp_path, section, "cpu", "--device", "cuda:0") == (
        "error: --device: 'cuda:0' requested but CUDA is not available; use --device cpu or auto")


@pytest.mark.parametrize(("section", "device", "detail"), [
    ("eval", "gpu", "cannot parse 'gpu'; use auto, cpu, cuda or cuda:N"),
    ("train", "mps", "'mps' is not supported (the harness runs and is tested on CPU and CUDA); use auto, cpu, cuda "
                     "or cuda:N"),
    ("eval", "mps", "'mps' is not supported (the harness runs and is tested on CPU and CUDA); use auto, cpu, cuda "
                    "or cuda:N")])
def test_a_sweep_configs_unusable_device_names_its_section(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           section: str, device: str, detail: str) -> None:
    assert sweep_error(capsys, tmp_path, section, device) == f"error: {section}.device: {detail}"  # before: device:
    assert sweep_error(capsys, tmp_path, section, "cpu", "--device", device) == f"error: --device: {detail}"


def test_test_fraction_with_a_registered_data_set_names_the_key_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    detail = ("only used with a data file (dataset: {file: ...}, --data FILE): 'digits' has its own test split; "
              "remove it")  # before: "... remove it (--test-fraction)" after the key's name too
    out = ["--out", str(tmp_path / "m.pt")]
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**BASE, "test_fraction": 0.3}))
    assert error_line(capsys, ["train", "--config", str(config), *out]) == f"error: test_fraction: {detail}"
    config.write_text(yaml.safe_dump(BASE))
    assert error_line(capsys, ["train", "--config", str(config), "--test-fraction", "0.3", *out]) == \
        f"error: --test-fraction: {detail}"


def train_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(("flags", "named"), [
    (["--k-ratio", "0.1"], "--k-ratio: a kWTA setting"), (["--k", "3"], "--k: a kWTA setting"),
    (["--activation", "relu", "--k-ratio", "0.1", "--kwta-mode", "channel"], "--k-ratio, --kwta-mode: kWTA settings")])
def test_a_kwta_flag_with_the_relu_activation_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         flags: list[str], named: str) -> None:
    argv = ["train", "--dataset", "digits", "--arch", "mlp", "--epochs", "1", "--out", str(tmp_path / "m.pt")]
    # before: trained a ReLU model (the ratio ignored), exit 0
    assert error_line(capsys, [*argv, *flags]) == (
        f"error: {named}, but the activation is relu, which has none: the model would train as ReLU; add "
        "--activation kwta")
    assert not (tmp_path / "m.pt").exists()
    cfg = train_command.config_from_args(train_args(*flags, "--activation", "kwta"))  # the last --activation
    assert cfg.activation.name == "kwta"  # the fix is accepted


def test_a_config_files_ratio_with_relu_is_warned_of_and_trains_as_relu(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**BASE, "activation": {"name": "relu", "k_ratio": 0.1}}))
    with caplog.at_level(logging.WARNING, logger="kwta_robust.commands.train"):
        cfg = train_command.config_from_args(train_args("--config", str(config)))
    assert cfg.activation.to_spec().name == "relu"
    assert [r.getMessage() for r in caplog.records] == [
        "activation.k_ratio: ignored, the activation is relu (the model trains as ReLU); set activation: kwta (or "
        "--activation kwta) for a kWTA model"]
    caplog.clear()
    config.write_text(yaml.safe_dump({**BASE, "activation": {"name": "relu", "mode": "volume"}}))  # the default
    with caplog.at_level(logging.WARNING, logger="kwta_robust.commands.train"):
        train_command.config_from_args(train_args("--config", str(config)))
    assert caplog.records == []


def test_the_non_finite_logits_note_names_the_python_apis_store_too() -> None:
    x, y = grid_data()
    config = {"n_examples": 12, "batch_size": 12, "seed": 0, "mode": "independent",
              "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "fgsm"}]}
    record = evaluate_model(NaNOffGrid().eval(), config, x, y, threads=1)
    (flag,) = [f for f in record.diagnostics if f.code == "non-finite-logits"]
    # before: "... (the adversarial inputs: --save-adversarial)", a flag the Python API has not
    assert flag.message.endswith("check the model's numerics on them (the adversarial inputs: evaluate "
                                 "--save-adversarial, kwta_robust.evaluate.evaluate's save_adversarial=)")
