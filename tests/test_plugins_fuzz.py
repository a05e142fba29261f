"""Hostile attack plug-ins, end to end (CLI and Python API): an attack that changes its input in place, returns a
sparse tensor, converts the model, leaves a global torch or process setting changed, calls ``sys.exit`` or raises an
exception whose message cannot be read. Each ends in the runner's own verified numbers or one error line naming the
attack; the clean inputs, the earlier results and the caller's process stay as they were."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from attacks.base import REGISTRY, register_attack
from attacks.errors import first_line
from kwta_robust.api import evaluate_model
from kwta_robust.errors import ConfigError
from kwta_robust.results import load_record
from tests.test_plugins import cli, installed, write_inputs  # noqa: F401 (the fixture)

EPS = 0.1


def _far(x: Tensor) -> Tensor:
    """``x`` moved in place 0.5 towards the far bound of each pixel, the returned point inside the moved ball."""
    with torch.no_grad():
        x.copy_(torch.where(x < 0.5, torch.ones_like(x), torch.zeros_like(x)))
    return x.clone()


def _sys_exit(x: Tensor) -> Tensor:
    raise SystemExit(3)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise TypeError("no str")


def _unprintable(x: Tensor) -> Tensor:
    raise _Unprintable()


MODES: dict[str, Callable[..., Tensor]] = {
    "ok": lambda m, x, y: x.clone(),
    "inplace-far": lambda m, x, y: _far(x),
    "inplace-zero": lambda m, x, y: x.zero_(),
    "inplace-y": lambda m, x, y: (y.add_(1).remainder_(10), x.clone())[1],
    "sparse": lambda m, x, y: x.clone().to_sparse(),
    "double-model": lambda m, x, y: (m.double(), x.clone())[1],
    "grad-off": lambda m, x, y: (torch.set_grad_enabled(False), x.clone())[1],
    "default-dtype": lambda m, x, y: (torch.set_default_dtype(torch.float64), x.clone())[1],
    "threads": lambda m, x, y: (torch.set_num_threads(torch.get_num_threads() + 1), x.clone())[1],
    "deterministic": lambda m, x, y: (torch.use_deterministic_algorithms(True), x.clone())[1],
    "anomaly": lambda m, x, y: (torch.autograd.set_detect_anomaly(True), x.clone())[1],
    "cwd": lambda m, x, y: (os.chdir(os.path.dirname(os.getcwd()) or "/"), x.clone())[1],
    "logging-off": lambda m, x, y: (logging.disable(logging.CRITICAL), x.clone())[1],
    "root-level": lambda m, x, y: (logging.root.setLevel(logging.CRITICAL), x.clone())[1],
    "sys-exit": lambda m, x, y: _sys_exit(x),
    "unprintable": lambda m, x, y: _unprintable(x),
}


@pytest.fixture
def hostile() -> None:
    """``hostile`` registered as a script registers it: misbehaving as its ``mode`` parameter says."""
    with REGISTRY.preserved():
        @register_attack("hostile", norms=("linf",), kind="white-box")
        def make(seed: int = 0, mode: str = "ok"):
            """misbehaves on request"""
            def attack(model, x, y, threat):
                return MODES[mode](model, x, y)
            attack.name = "hostile"
            return attack
        yield


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


def _config(mode: str) -> dict:
    return {"n_examples": 12, "batch_size": 6, "seed": 0, "mode": "independent",
            "threats": [{"norm": "linf", "epsilons": [EPS]}],
            "attacks": [{"attack": "hostile", "params": {"mode": mode}}, {"attack": "fgsm"}],
            "diagnostics": {"enabled": False}}


def _data(net: nn.Module) -> tuple[Tensor, Tensor]:
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, net(x).argmax(dim=1)


def _global_state() -> dict:
    return {"grad": torch.is_grad_enabled(), "dtype": torch.get_default_dtype(), "threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled(), "anomaly": torch.is_anomaly_enabled(),
            "cwd": os.getcwd(), "logging": logging.root.manager.disable,
            "level": logging.root.level}


@pytest.mark.parametrize("mode", ["inplace-far", "inplace-zero"])
def test_an_attack_changing_its_input_in_place_is_verified_against_the_clean_input(
        hostile: None, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    net = _net()
    x, y = _data(net)
    kept = x.clone()
    with caplog.at_level(logging.WARNING):
        record = evaluate_model(net, _config(mode), x, y, threads=1)
    assert torch.equal(x, kept)
    ok = evaluate_model(net, _config("ok"), x, y, threads=1)
    hostile_result, fgsm = record.results[0], record.results[1]
    assert record.clean == ok.clean and fgsm.flags == ok.results[1].flags
    # every returned row lies about 0.5 (far) or up to 1 (zero) from its clean input: outside the 0.1 ball
    assert hostile_result.violations == 12 and hostile_result.max_violation > 0.3
    assert "attack 'hostile' at Linf 0.1 changed its input x in place" in caplog.text


def test_an_attack_changing_its_labels_in_place_changes_no_verdict(hostile: None,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    net = _net()
    x, y = _data(net)
    with caplog.at_level(logging.WARNING):
        record = evaluate_model(net, _config("inplace-y"), x, y, threads=1)
    ok = evaluate_model(net, _config("ok"), x, y, threads=1)
    assert record.results[0].flags == ok.results[0].flags == [1] * 12
    assert record.results[0].margins == ok.results[0].margins  # margins against the true labels
    assert "attack 'hostile' at Linf 0.1 changed its input y in place" in caplog.text


@pytest.mark.parametrize("mode, words", [
    ("sparse", "attack 'hostile' at Linf 0.1 returned a torch.sparse_coo tensor, expected a dense (torch.strided) "
               "tensor like x"),
    ("double-model", "attack 'hostile' at Linf 0.1 converted or moved the model's '1.weight' (torch.float32 on cpu -> "
                     "torch.float64 on cpu)"),
    ("grad-off", "attack 'hostile' at Linf 0.1 left torch's gradient mode off (torch.set_grad_enabled(False))"),
    ("default-dtype", "attack 'hostile' at Linf 0.1 left torch's default dtype torch.float64 (was torch.float32)"),
    ("threads", "attack 'hostile' at Linf 0.1 left torch's CPU thread count "),
    ("deterministic", "attack 'hostile' at Linf 0.1 left torch.use_deterministic_algorithms True (was False)"),
    ("anomaly", "attack 'hostile' at Linf 0.1 left torch.autograd.set_detect_anomaly True (was False)"),
    ("cwd", "attack 'hostile' at Linf 0.1 left the working directory "),
    ("logging-off", "attack 'hostile' at Linf 0.1 left logging.disable at level 50 (was 0)"),
    ("root-level", "attack 'hostile' at Linf 0.1 left the root logger's level at 50 (was "),
    ("sys-exit", "attack 'hostile' at Linf 0.1 called sys.exit(3) on a batch of 6 samples"),
    ("unprintable", "attack 'hostile' at Linf 0.1 raised _Unprintable: (unprintable _Unprintable) (at "),
])
def test_a_hostile_attack_is_one_error_line_and_the_process_is_put_back(hostile: None, mode: str,
                                                                         words: str) -> None:
    net = _net()
    x, y = _data(net)
    before = _global_state()
    with pytest.raises(ConfigError) as caught:
        evaluate_model(net, _config(mode), x, y, threads=1)
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert _global_state() == before


def test_a_hostile_attack_keeps_the_finished_results_in_the_cli(installed: Path, hostile: None) -> None:
    write_inputs(installed, attacks=[{"attack": "fgsm"}, {"attack": "hostile", "params": {"mode": "grad-off"}}],
                 mode="independent")
    before = _global_state()
    status, err = cli(installed, "r.json")
    assert status == 2 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "attack 'hostile' at Linf 0.1 left torch's gradient mode off" in line
    assert [r.attack for r in load_record(installed / "r.json").results] == ["fgsm"]
    assert _global_state() == before


def test_an_exception_whose_message_cannot_be_read_has_a_first_line() -> None:
    assert first_line(_Unprintable()) == "(unprintable _Unprintable)"
    assert first_line(ValueError("one\ntwo")) == "one"
