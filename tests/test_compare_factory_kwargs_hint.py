"""``compare`` gives ``--factory-kwargs`` to every ``package.module:function=WEIGHTS`` model. A researcher comparing
``make_kwta(sr)`` with its ReLU twin ``make_relu()`` passed ``{"sr": 0.05}`` and got "make_relu: unknown argument
'sr'; accepted: none (--factory-kwargs)", which names no way out (persona walk 2); now the line says compare gives
the arguments to every factory and how to give each model its own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from kwta_robust.cli import main


def make_scaled(scale: float = 1.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def make_plain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def test_factory_kwargs_one_factory_refuses_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 4, "batch_size": 4, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 1}}],
    }))
    models = []
    for name, build in (("make_scaled", make_scaled), ("make_plain", make_plain)):
        torch.save(build().state_dict(), tmp_path / f"{name}.pt")
        models.append(f"test_compare_factory_kwargs_hint:{name}={tmp_path / f'{name}.pt'}")
    assert main(["compare", *models, "--factory-kwargs", '{"scale": 2.0}', "--config", str(config), "--out-dir",
                 str(tmp_path / "cmp"), "--dry-run"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert lines == ["error: MODEL 2 (make_plain): model factory 'test_compare_factory_kwargs_hint:make_plain': "
                     "unknown argument 'scale'; accepted: none (--factory-kwargs); compare passes the same "
                     "--factory-kwargs to all 2 package.module:function models but those given their own by label: "
                     "give this one its own, --factory-kwargs 'make_plain={...}' (its label, '=', a JSON object; "
                     "'make_plain={}' for none), or give the factories the same arguments"]
