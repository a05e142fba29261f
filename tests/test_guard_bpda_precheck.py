"""A module BPDA cannot act through is refused before any work: no clean pass, no record, no file in the output dir.

The refusal (:mod:`kwta_robust.straight_through`) used to come when the runner resolved the BPDA layers, after the
clean pass had run and a partial record had been written to ``--out``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.api import compare_models_in_memory, evaluate_model
from kwta_robust.errors import ConfigError
from test_cli_eval import run_error, write_config
from test_straight_through import KeywordCall, LinearTopK, Unpack

TUPLE = ("bpda_layers: module '2.gate' (TupleGate) returns a tuple, not one tensor in and one out, so BPDA cannot "
         "replace its backward")


def make_tuple_gate_mlp() -> nn.Module:
    """Factory used through --model-factory test_guard_bpda_precheck:make_tuple_gate_mlp (28 x 28 inputs)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 8), Unpack(), nn.Linear(8, 10))


def bpda_config(layers: list[str], **extra: object) -> dict:
    return {"n_examples": 8, "batch_size": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
            "attacks": ["fgsm", {"attack": "bpda", "params": {"inner_params": {"steps": 1}}}],
            "bpda_layers": layers, "diagnostics": {"enabled": False}, **extra}


def test_the_cli_refuses_before_the_clean_pass_and_writes_no_record(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    torch.save(make_tuple_gate_mlp().state_dict(), tmp_path / "w.pt")
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.save({"x": x, "y": torch.arange(8) % 10}, tmp_path / "data.pt")
    cfg = write_config(tmp_path / "c.yaml", noise=[], **bpda_config(["auto", "2.gate"]))
    with caplog.at_level(logging.INFO):
        line = run_error(capsys, ["evaluate", "--model-factory", "test_guard_bpda_precheck:make_tuple_gate_mlp",
                                  "--weights", str(tmp_path / "w.pt"), "--config", str(cfg), "--data",
                                  str(tmp_path / "data.pt"), "--out", str(out / "r.json"), "--no-progress"])
    assert line.startswith(f"error: {TUPLE}; name the module that computes the input times its mask")
    assert list(out.iterdir()) == []  # neither the record nor its lock or temp file
    assert not any("clean accuracy" in r.getMessage() for r in caplog.records)  # the clean pass never ran


@pytest.mark.parametrize("middle, spec, fragment", [
    (Unpack(), "2.gate", TUPLE),
    (KeywordCall(), "2.gate", "bpda_layers: module '2.gate' (ReluThenTopK) is called with keyword arguments"),
    (LinearTopK(width=8), "1", "bpda_layers: module '1' (LinearTopK) changes the number of elements of its input"),
])
def test_the_api_refuses_before_the_clean_pass_and_writes_no_record(tmp_path: Path, middle: nn.Module, spec: str,
                                                                    fragment: str,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    if isinstance(middle, LinearTopK):
        model = nn.Sequential(nn.Flatten(), middle, nn.Linear(8, 2))
    else:
        model = nn.Sequential(nn.Flatten(), nn.Linear(20, 8), middle, nn.Linear(8, 2))
    x = torch.rand(8, 1, 4, 5, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ConfigError) as caught, caplog.at_level(logging.INFO):
        evaluate_model(model, bpda_config([spec]), x, torch.arange(8) % 2, out_path=tmp_path / "r.json")
    assert str(caught.value).startswith(fragment)
    assert list(tmp_path.iterdir()) == []
    assert not any("clean accuracy" in r.getMessage() for r in caplog.records)


def test_a_comparison_refuses_before_the_first_model_is_evaluated(tmp_path: Path) -> None:
    """Only the second model has the module: the first model's record used to be written before the refusal."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 2))
    gated = nn.Sequential(nn.Flatten(), nn.Linear(20, 8), Unpack(), nn.Linear(8, 2))
    x = torch.rand(8, 1, 4, 5, generator=torch.Generator().manual_seed(1))
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as caught:
        compare_models_in_memory({"plain": plain, "gated": gated}, bpda_config(["auto", "2.gate"]), x,
                                 torch.arange(8) % 2, out_dir=out)
    assert str(caught.value).startswith(TUPLE)
    assert not out.exists() or list(out.iterdir()) == []
