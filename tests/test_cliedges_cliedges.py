"""Four edges of the fuzzing round: ``train`` read the data set before it looked at a mistyped ``arch`` or
``--arch-arg``; an attack factory raising ``TypeError`` for its own reasons was "invalid parameters ['seed']";
``compare_models_in_memory`` given one module twice said nothing (the CLI warns); a record error quoted a 100 kB
attack label (or eps text) at full length."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

import kwta_robust.training.run as training_run
from attacks.base import REGISTRY, create_attack, register_attack
from attacks.errors import AttackConfigError
from eval_helpers import make_record, make_result
from kwta_robust.api import compare_models_in_memory
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError
from kwta_robust.record_checks import check_record
from kwta_robust.record_values import TEXT_WIDTH
from kwta_robust.results import RecordError, load_record, save_record
from kwta_robust.training import TrainConfig, run_training


# --- 1. train checks the architecture before reading data --------------------------------------------------------
def _no_data(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("the data set was loaded")


@pytest.mark.parametrize("flags, error", [
    (["--arch", "cnnn"], "error: --arch: unknown architecture 'cnnn'; known architectures: "),  # the flag's
    (["--arch", "cnn", "--arch-arg", "chanels=[4]"], "error: arch 'cnn': unknown argument 'chanels'; accepted: "),
    (["--arch", "cnn", "--arch-arg", "channels=3"], "error: arch 'cnn': argument 'channels' expects Sequence[int]"),
    (["--arch", "cnn", "--arch-arg", "channels=[100000000]"], "error: model: cnn(channels=[100000000]) would have "),
])
def test_train_refuses_a_bad_architecture_before_loading_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, flags: list[str],
        error: str) -> None:
    monkeypatch.setattr(training_run, "load_dataset", _no_data)
    rc = main(["train", "--dataset", "digits", *flags, "--epochs", "1", "--out", str(tmp_path / "m.pt")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2
    assert len(lines) == 1 and lines[0].startswith(error)
    assert not (tmp_path / "m.pt").exists()


def test_run_training_checks_the_architecture_before_loading_data(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setattr(training_run, "load_dataset", _no_data)
    cfg = TrainConfig.from_dict({"dataset": "digits", "arch": "mlp", "arch_kwargs": {"width": 8},
                                 "out": str(tmp_path / "m.pt")})
    with pytest.raises(ConfigError, match=r"^arch 'mlp': unknown argument 'width'; accepted: hidden$"):
        run_training(cfg)


# --- 2. a factory's own TypeError is not "invalid parameters" ----------------------------------------------------
def _type_error_factory(seed: int = 0) -> Any:
    raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")


@pytest.fixture
def type_error_attack() -> Any:
    with REGISTRY.preserved():
        register_attack("cl-type", norms=("linf",), kind="white-box")(_type_error_factory)
        yield


OWN = "attack 'cl-type': its factory raised TypeError: unsupported operand type(s) for +: 'int' and 'str'; fix the " \
      "factory (or its params)"


def test_a_factorys_own_type_error_is_named_as_such(type_error_attack: None) -> None:
    with pytest.raises(AttackConfigError) as info:
        create_attack("cl-type", seed=0)
    assert str(info.value) == OWN
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict({"dataset": "digits", "n_examples": 4, "batch_size": 4, "diagnostics": {"enabled": False},
                              "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": ["fgsm", "cl-type"]})
    assert str(info.value) == f"attacks[1]: {OWN}"


def test_parameters_the_signature_refuses_are_still_named(type_error_attack: None) -> None:
    with pytest.raises(AttackConfigError) as info:
        create_attack("cl-type", seed=0, steps=3)
    assert str(info.value) == "attack 'cl-type': unknown parameter 'steps'; valid: seed"


# --- 3. compare_models_in_memory warns of one module given twice -------------------------------------------------
CONFIG = {"dataset": "toy", "batch_size": 4, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": ["fgsm"], "diagnostics": {"enabled": False}}


def _compare(models: dict[str, nn.Module], caplog: pytest.LogCaptureFixture) -> list[str]:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 1, 4, 5, generator=gen), torch.randint(0, 3, (4,), generator=gen)
    with caplog.at_level(logging.WARNING):
        records = compare_models_in_memory(models, CONFIG, x, y, threads=1)
    assert [r.label for r in records] == list(models)
    return [r.getMessage() for r in caplog.records if "compared with itself" in r.getMessage()]


def test_one_module_twice_is_warned_about_naming_both_labels(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(20, 3)).eval()
    assert _compare({"a": net, "b": net}, caplog) == [
        "model 'b': its nn.Module is model 'a' again: one model compared with itself (the same numbers, and its "
        "transfer attack crafted on the model itself); give another model to compare two"]


def test_two_modules_with_equal_weights_are_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(20, 3)).eval()
    assert _compare({"a": net, "b": copy.deepcopy(net)}, caplog) == []


# --- 4. record errors cut a huge label or eps text ---------------------------------------------------------------
BIG = "L" * 100_000
CUT = f"{BIG[:TEXT_WIDTH]}... (100,000 characters)"


def _label(data: dict, label: str) -> None:
    data["results"][0]["label"] = label
    data["worst_case"][0]["attacks"] = [label]


def _big_label_twice(data: dict) -> None:
    _label(data, BIG)
    data["results"].append(copy.deepcopy(data["results"][0]))


def _big_label_miscounted(data: dict) -> None:
    _label(data, BIG)
    data["results"][0]["n_broken"] = 5


def _big_eps_miscounted(data: dict) -> None:
    data["results"][0]["eps_text"] = "9" * 100_000
    data["results"][0]["n_broken"] = 5


def _big_name_missing(data: dict) -> None:
    data["worst_case"][0]["attacks"] = [BIG]


@pytest.mark.parametrize("change, message", [
    (_big_label_twice, f"results hold two units of {CUT[:TEXT_WIDTH]!r}{CUT[TEXT_WIDTH:]} at Linf 0.3; keep one of "
                       "them"),
    (_big_label_miscounted, f"results[0] ({CUT}, Linf 0.3): n_broken = 5 but its flags count 1"),
    (_big_eps_miscounted, f"results[0] (pgd, Linf {'9' * TEXT_WIDTH}... (100,000 characters)): n_broken = 5 but its "
                          "flags count 1"),
    (_big_name_missing, f"worst_case[0] (Linf 0.3): attack {CUT[:TEXT_WIDTH]!r}{CUT[TEXT_WIDTH:]} is not among the "
                        "results at this threat model (pgd)"),
])
def test_a_record_error_cuts_a_huge_label_or_eps_text(tmp_path: Path, change: Callable[[dict], None],
                                                      message: str, capsys: pytest.CaptureFixture) -> None:
    save_record(make_record([make_result("pgd", [1, 0, -1])], clean_flags=[1, 1, 0]), tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    change(data)
    (tmp_path / "r.json").write_text(json.dumps(data))
    with pytest.raises(RecordError) as info:
        check_record(load_record(tmp_path / "r.json"), "r.json")
    assert str(info.value) == f"r.json: {message}"
    assert main(["table", str(tmp_path / "r.json")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'r.json'}: {message}"


def test_a_label_of_the_longest_kept_length_is_quoted_whole(tmp_path: Path) -> None:
    label = "p" * TEXT_WIDTH
    save_record(make_record([make_result("pgd", [1, 0, -1])], clean_flags=[1, 1, 0]), tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    _label(data, label)
    data["results"].append(copy.deepcopy(data["results"][0]))
    (tmp_path / "r.json").write_text(json.dumps(data))
    with pytest.raises(RecordError) as info:
        check_record(load_record(tmp_path / "r.json"), "r.json")
    assert str(info.value) == f"r.json: results hold two units of {label!r} at Linf 0.3; keep one of them"
