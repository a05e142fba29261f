"""``kwta-robust diff`` of two records whose configs differ only by ``1`` against ``1.0`` (small49 item 1): the config
hash (JSON text of the config) differs, so the config field that makes it differ is named too; before, the config
was compared with ``==`` (``1 == 1.0``) and only ``config_hash`` was listed, naming no key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.api import evaluate_model
from kwta_robust.cli import main
from kwta_robust.config_digest import config_digest
from kwta_robust.record_diff import record_differences, verdicts_summary

CONFIG = {"dataset": "toy", "batch_size": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}]}


def _record(config: dict) -> dict:
    return {"config": config, "config_hash": config_digest(config), "results": [],
            "provenance": {"torch_threads": 1, "started_at": "now"}}


def test_an_integer_against_the_equal_float_in_the_config_is_named() -> None:
    floated = {**CONFIG, "batch_size": 8.0}
    a, b = _record(CONFIG), _record(floated)
    assert a["config_hash"] != b["config_hash"]
    found = record_differences(a, b)
    assert found[0] == "config.batch_size: 8 != 8.0" and found[1].startswith("config_hash: ") and len(found) == 2
    assert verdicts_summary(found) is None  # a config difference is another evaluation
    b = _record(CONFIG)  # outside the config an integer still equals the float (as diff read them before)
    b["provenance"], b["dataset"], a["dataset"] = {"torch_threads": 1.0, "started_at": "later"}, {"n": 3.0}, {"n": 3}
    assert record_differences(a, b) == []


def test_the_cli_names_the_config_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 3)).eval()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(6, 1, 4, 5, generator=gen), torch.randint(0, 3, (6,), generator=gen)
    config = {**CONFIG, "attacks": [{"attack": "fgsm"}], "diagnostics": {"enabled": False}}
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    evaluate_model(model, config, x, y, out_path=first, threads=1)
    data = json.loads(first.read_text())
    data["config"]["seed"] = 0.0  # as a hand-written config or another writer may hold it
    data["config_hash"] = config_digest(data["config"])
    second.write_text(json.dumps(data))
    code = main(["diff", str(first), str(second)])
    out = capsys.readouterr().out
    assert code == 1 and "config.seed: 0 != 0.0" in out, out


def test_true_against_one_in_the_config_is_named_too() -> None:
    a, b = _record({**CONFIG, "flag": True}), _record({**CONFIG, "flag": 1})
    assert a["config_hash"] != b["config_hash"]
    found = record_differences(a, b)
    assert found[0] == "config.flag: True != 1" and found[1].startswith("config_hash: ") and len(found) == 2
