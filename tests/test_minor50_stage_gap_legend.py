"""A BPDA attack whose stages run different inner attacks shows ``—`` for a setting one stage's attack lacks
(``loss ce/—``), but neither the protocol's legend (``table --protocol``) nor the dry run's (``evaluate --dry-run``)
said what ``—`` means. Both legends explain it now, only where a row shows one (other protocols read as before)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from attacks import create_attack
from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.protocol import render_protocol

LEGEND = "—: in a/b/c, a BPDA stage whose own inner attack (its stage_params inner) has no such setting"
STAGES = {"surrogate": "smooth", "inner": "apgd-ce", "temperature_schedule": [0.1, 0.05], "stage_steps": [2, 2],
          "stage_params": [{}, {"inner": "apgd-t", "n_target_classes": 3}]}


def _record(params: dict):
    settings = create_attack("bpda", **params).attack_settings(num_classes=10)
    result = dataclasses.replace(make_result("bpda", [1, 0, 1], kind="bpda", params=params), settings=settings)
    return make_record([result])


def test_the_protocol_legend_explains_a_stage_gap_only_where_one_is_shown() -> None:
    shown = render_protocol([_record(STAGES)], fmt="md")
    assert "loss ce/—" in shown and shown.count(LEGEND) == 1
    plain = render_protocol([_record({**STAGES, "stage_params": [{}, {}]})], fmt="md")
    assert "—/" not in plain and "/—" not in plain and LEGEND not in plain


def test_the_dry_run_legend_explains_it_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    base = {"dataset": "digits", "n_examples": 8, "batch_size": 8, "device": "cpu",
            "threats": [{"norm": "linf", "epsilons": [0.1]}], "diagnostics": {"budget_check": {"enabled": False}}}
    texts = {}
    for name, params in (("gap", STAGES), ("none", {**STAGES, "stage_params": [{}, {}]})):
        config.write_text(yaml.safe_dump({**base, "attacks": [{"attack": "bpda", "params": params}]}))
        capsys.readouterr()
        assert main(["evaluate", "--model-factory", "test_seeds50_foreign_activation:topk_net", "--config",
                     str(config), "--out", str(tmp_path / f"{name}.json"), "--dry-run", "--no-progress"]) == 0
        texts[name] = " ".join(capsys.readouterr().out.split())
    assert "loss ce/—" in texts["gap"] and texts["gap"].count(LEGEND) == 1
    assert LEGEND not in texts["none"] and "/—" not in texts["none"]
