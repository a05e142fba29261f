"""A kWTA model of one's own (a hand-written top-k module only the layer probe finds) is named by what the probe
found (``model.activation`` ``top-k (detected)``, :func:`kwta_robust.fresh_record.probed_model`) in every record
written once the probe ran — partial records and a sharded run's parts too, which said ``relu`` until the run was
complete — and a resume keeps it; the record's ``model.training`` copy of the describer's reading is named alike
(it said ``relu``), and a matrix refusing a record written before names it so too. ``diff`` of such records:
tests/test_foreign51_diff.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor, nn

import kwta_robust.evaluate as evaluate_module
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.matrix import build_matrices
from kwta_robust.results import load_record

FACTORY = "test_foreign51_provenance:topk_net"
DETECTED = {"activation": "top-k (detected)", "activation_layers": "relu", "detected_kwta_ratio": 0.25,
            "detected_kwta_mode": "dense"}


class TopK(nn.Module):
    """Keeps each sample's 25% largest features of ``[N, F]`` (a user's own kWTA, not the package's layer)."""

    def forward(self, h: Tensor) -> Tensor:
        k = max(1, h.shape[1] // 4)
        return h * (h >= h.topk(k, dim=1).values[:, -1:])


def topk_net() -> nn.Module:
    """``[N, 1, 8, 8] -> [N, 10]`` (the digits images) with a ReLU and one top-k gate, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), TopK(), nn.Linear(32, 16), nn.ReLU(),
                             nn.Linear(16, 10)).eval()


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 8, "batch_size": 4, "device": "cpu", "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.05, 0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
        "diagnostics": {"budget_check": {"enabled": False}}}))
    return config


def _evaluate(config: Path, out: Path, *extra: str) -> int:
    return main(["evaluate", "--model-factory", FACTORY, "--config", str(config), "--out", str(out), "--no-progress",
                 *extra])


def _writes(monkeypatch: pytest.MonkeyPatch, stop_after_result: bool = False) -> list[dict[str, Any]]:
    """Every record the runner writes, as written (its file name, status, whether it holds the probe's findings,
    its model section); ``stop_after_result``: interrupted after the first write holding an attack's result."""
    seen: list[dict[str, Any]] = []
    real = evaluate_module.save_record

    def save(record: Any, path: Path, *args: Any) -> None:
        real(record, path, *args)
        seen.append({"file": Path(path).name, "status": record.status, "probed": bool(record.detection),
                     "model": json.loads(Path(path).read_text())["model"]})
        if stop_after_result and record.results:
            raise KeyboardInterrupt  # Ctrl-C right after this write

    monkeypatch.setattr(evaluate_module, "save_record", save)
    return seen


def _named(model: dict) -> dict:
    return {k: model.get(k) for k in DETECTED}


def test_every_write_after_the_probe_names_the_model_as_found_and_a_resume_keeps_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, out = _config(tmp_path), tmp_path / "topk.json"
    seen = _writes(monkeypatch, stop_after_result=True)
    assert _evaluate(config, out) == 130  # interrupted
    partial = load_record(out)
    assert partial.status == "partial" and len(partial.results) == 1  # interrupted after its first unit
    assert _named(partial.model) == DETECTED  # said "relu" until the run was complete
    assert all(_named(w["model"]) == DETECTED for w in seen if w["probed"]) and seen[-1]["probed"]
    monkeypatch.undo()
    assert _evaluate(config, out) == 0  # resumed from its own partial record: no mismatch, the unit kept
    record = load_record(out)
    assert record.status == "complete" and len(record.results) == 2 and record.provenance.get("resumed_at")
    assert record.results[0].flags == partial.results[0].flags
    assert _named(record.model) == DETECTED


def test_a_sharded_runs_parts_name_the_model_as_the_drivers_probe_found_it_from_their_first_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, out = _config(tmp_path), tmp_path / "topk.json"
    seen = _writes(monkeypatch)
    assert _evaluate(config, out, "--shards", "2", "--executor", "inline") == 0
    ranges = [w for w in seen if w["file"].startswith("attacks-")]  # the parts on sample ranges: driver probed
    assert ranges and all(_named(w["model"]) == DETECTED for w in ranges)
    assert ranges[0]["status"] == "partial" and not ranges[0]["probed"]  # its first write, before its own detect
    assert all(_named(w["model"]) == DETECTED for w in seen if w["probed"])
    assert _named(load_record(out).model) == DETECTED


def test_the_training_copy_names_the_activation_as_the_model_does(tmp_path: Path) -> None:
    config, out = _config(tmp_path), tmp_path / "topk.json"
    assert _evaluate(config, out) == 0
    model = load_record(out).model
    assert _named(model["training"]) == DETECTED  # the loader's copy of the describer's reading said "relu"
    assert model["training"]["model_factory"] == FACTORY and model["training"]["factory_kwargs"] == {}
    assert _evaluate(config, out) == 0  # complete: kept as it is, named the same
    assert load_record(out).model == model


def test_a_matrix_names_a_record_written_before_as_the_probe_found_it(tmp_path: Path) -> None:
    config, out = _config(tmp_path), tmp_path / "topk.json"
    assert _evaluate(config, out, "--n-examples", "4") == 0
    record = load_record(out)
    record.model = {k: v for k, v in record.model.items() if k not in DETECTED}
    record.model["activation"] = "relu"  # as a run before the probe's reading was recorded wrote it
    with pytest.raises(ConfigError, match=r"record 'topk_net' has activation 'top-k \(detected\)' \(kwta_ratio None\); "
                                          r"the layer probe found top-k gates in layer 2"):  # it said 'relu'
        build_matrices([record])
