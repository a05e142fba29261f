"""Pins of README sentences added today that no test held (the README-truth audit of 2026-12-07):

* a top-k gate built under ``torch.no_grad`` inside a block BPDA acts on inline is refused before the clean pass, as
  one inside a custom ``torch.autograd.Function`` is (tests/test_prefl_function_gate.py);
* a sweep's or a training's config given to ``compare --config`` stops with the one line ``evaluate`` gives
  (eval_configs/README.md; ``evaluate``: tests/test_user_config_kind.py);
* from Python (``kwta_robust.api``) a model's ``print`` reaches the caller's stdout: only the commands log it;
* a CPU's ``provenance.device_name`` on Linux is the model name ``/proc/cpuinfo`` gives, else the architecture."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

import wild_kwta_models as wild
from kwta_robust import runtime
from kwta_robust.api import evaluate_model
from kwta_robust.errors import ConfigError
from test_cli_eval import run_error, write_checkpoint
from test_prefl_function_gate import X, _config, _labels

CONFIGS = Path(__file__).resolve().parent.parent / "eval_configs"


class NoGradGate(nn.Module):
    """``x + f · (f ≥ t)``, the whole gate (threshold and mask) made under ``torch.no_grad``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        with torch.no_grad():
            gated = f * (f >= f.flatten(1).topk(20, dim=1).values[:, -1:, None, None])
        return x + gated


@pytest.mark.parametrize("surrogate", ["smooth", "identity"])
def test_a_gate_made_under_no_grad_is_refused_before_the_clean_pass(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                    surrogate: str) -> None:
    model = wild.seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), NoGradGate(), nn.Flatten(),
                                              nn.Linear(256, 3)))
    with pytest.raises(ConfigError) as caught, caplog.at_level(logging.INFO):
        evaluate_model(model, _config(surrogate), X, _labels(model), out_path=tmp_path / "r.json")
    assert str(caught.value).startswith("BPDA layer '1' (NoGradGate) builds its top-k gate where autograd records "
                                        "nothing (inside a custom torch.autograd.Function, or under torch.no_grad)")
    assert not any("clean accuracy" in r.getMessage() for r in caplog.records)  # no clean pass, no PGD
    assert list(tmp_path.iterdir()) == []  # no record, no lock


@pytest.mark.parametrize("name,kind,command", [
    ("sweep_mnist5k_3x3.yaml", "sweep", "kwta-robust sweep"),
    ("train_cnn_kwta.yaml", "training", "kwta-robust train --config"),
])
def test_compare_names_another_commands_config_with_its_command(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                name: str, kind: str, command: str) -> None:
    a, b = write_checkpoint(tmp_path / "a.pt"), write_checkpoint(tmp_path / "b.pt", seed=1)
    path = CONFIGS / name
    out = tmp_path / "out"
    line = run_error(capsys, ["compare", str(a), str(b), "--config", str(path), "--out-dir", str(out)])
    assert line == f"error: --config: {path} is a {kind} config, not an evaluation config; run it with " \
                   f"`{command} {path}`, or give an evaluation config (eval_configs/README.md)"
    assert not out.exists()


class Printing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("DEBUG forward", tuple(x.shape))
        return self.body(x)


def test_from_python_a_models_print_reaches_the_callers_stdout(capsys: pytest.CaptureFixture) -> None:
    model = wild.seeded(Printing)
    config = {"n_examples": len(X), "batch_size": len(X), "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
              "attacks": [{"attack": "fgsm"}], "diagnostics": {"enabled": False}}
    labels = _labels(model)
    capsys.readouterr()  # the labels' forward printed too
    evaluate_model(model, config, X, labels)
    out = capsys.readouterr().out
    assert f"DEBUG forward {tuple(X.shape)}" in out.splitlines()  # the clean pass: one batch of every sample


@pytest.mark.parametrize("cpuinfo,expected", [
    ("processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\nflags\t\t: fpu\n",
     "AMD EPYC 9654 96-Core Processor"),
    ("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n", "aarch64"),  # no model name
])
def test_a_cpus_device_name_is_its_model_name_else_the_architecture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                     cpuinfo: str, expected: str) -> None:
    """README (Thread count): on Linux the model name from /proc/cpuinfo, the architecture where it names none."""
    fake = tmp_path / "cpuinfo"
    fake.write_text(cpuinfo)
    real_open = open
    monkeypatch.setattr(runtime, "open", lambda path, *a, **k: real_open(fake if path == "/proc/cpuinfo" else path,
                                                                        *a, **k), raising=False)
    monkeypatch.setattr(runtime.platform, "processor", lambda: "")  # what Linux answers
    monkeypatch.setattr(runtime.platform, "machine", lambda: "aarch64")
    assert runtime.processor_name(torch.device("cpu")) == expected
