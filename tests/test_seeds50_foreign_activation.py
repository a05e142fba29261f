"""A kWTA model of one's own (a hand-written top-k module the layer probe finds, not our ``KWTA`` layer) beside a
ReLU was recorded with ``model.activation: "relu"``, so a reader of records took it for a ReLU model. The record
now says what the probe found (``top-k (detected)``, the gates' k/N and grouping), keeps the describer's reading as
``activation_layers``, and the matrices still take only the real ReLU twin for row 1.0."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor, nn

from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.fresh_record import probed_model
from kwta_robust.matrix import RELU_RATIO, build_matrices, cell_coordinates
from kwta_robust.report import activation_text
from kwta_robust.results import load_record


class TopK(nn.Module):
    """Keeps each sample's 25% largest features of ``[N, F]`` (a user's own kWTA)."""

    def forward(self, h: Tensor) -> Tensor:
        k = max(1, h.shape[1] // 4)
        return h * (h >= h.topk(k, dim=1).values[:, -1:])


def _net(gate: nn.Module) -> nn.Module:
    """``[N, 1, 8, 8] -> [N, 10]`` (the digits images), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), gate, nn.Linear(32, 16), nn.ReLU(),
                             nn.Linear(16, 10)).eval()


def topk_net() -> nn.Module:
    return _net(TopK())


def relu_net() -> nn.Module:
    return _net(nn.ReLU())


def test_a_foreign_topk_model_is_recorded_as_what_the_probe_found(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 8, "batch_size": 8, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
        "diagnostics": {"budget_check": {"enabled": False}}}))
    records = {}
    for name in ("topk_net", "relu_net"):
        records[name] = tmp_path / f"{name}.json"
        assert main(["evaluate", "--model-factory", f"test_seeds50_foreign_activation:{name}", "--config",
                     str(config), "--out", str(records[name]), "--no-progress"]) == 0
    topk, relu = load_record(records["topk_net"]), load_record(records["relu_net"])
    assert {k: topk.model.get(k) for k in ("activation", "activation_layers", "detected_kwta_ratio",
                                           "detected_kwta_mode", "kwta_ratio")} == {
        "activation": "top-k (detected)", "activation_layers": "relu", "detected_kwta_ratio": 0.25,
        "detected_kwta_mode": "dense", "kwta_ratio": None}
    assert probed_model(topk) == topk.model  # applied again (a resumed record): the same
    assert activation_text(topk) == "relu + top-k 0.25 dense (1 found by the probe)"  # the tables as before
    # the real twin is still the ReLU twin; the top-k model is no matrix row until its cell is declared
    assert relu.model["activation"] == "relu" and "activation_layers" not in relu.model
    assert cell_coordinates(relu).kwta_ratio == RELU_RATIO
    with pytest.raises(ConfigError, match=r"has activation 'top-k \(detected\)' \(kwta_ratio None\); the layer probe "
                                          r"found top-k gates in layer 2 \(k/N 8/32\)"):
        build_matrices([topk, relu])
