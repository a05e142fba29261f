"""Dry run 51: `evaluate --model-factory ... --bpda-layer Norm --dry-run` on a model whose top-k gates are other
modules than the normalization layer it names printed only "bpda acts on: norm (wrapped module)"; the run then
raised two critical flags the layer probe already knew of: `bpda-straight-through` (BPDA passes the gradient
straight through Norm, which maps its input) and `gates-without-bpda` (the three gates left to plain gradients).
The dry run now raises the run's checks over the layer probe and the BPDA layers (kwta_robust.plan_flags), with the
run's own messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.dry_run import dry_run_one
from kwta_robust.plan_flags import LAYER_CHECKS
from kwta_robust.runs import evaluate_one

CONFIG = {
    "dataset": "mnist5k", "n_examples": 8, "batch_size": 8, "device": "cpu", "seed": 0,
    "threats": [{"norm": "linf", "epsilons": [0.1]}],
    "attacks": [{"attack": "pgd", "params": {"steps": 1}},
                {"attack": "bpda", "params": {"surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 1}}}],
    "diagnostics": {"gradient_batch": 8},
}


class TopK(nn.Module):
    """A hand-written kWTA gate: the top quarter of each sample's activations kept, the rest zeroed."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        flat = h.flatten(1)
        kth = flat.topk(max(1, flat.shape[1] // 4), dim=1).values[:, -1:]
        return (flat * (flat >= kth)).view_as(h)


class Norm(nn.Module):
    """A LayerNorm-like module: it maps its input (no 0/1 mask of it), so BPDA's identity backward skips that map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mean, std = h.mean(dim=(1, 2, 3), keepdim=True), h.std(dim=(1, 2, 3), keepdim=True) + 1e-5
        return (h - mean) / std * self.weight.view(1, -1, 1, 1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.gate1 = nn.Conv2d(1, 4, 3, stride=2), Norm(4), TopK()
        self.conv2, self.gate2 = nn.Conv2d(4, 8, 3, stride=2), TopK()
        self.fc, self.gate3, self.out = nn.Linear(8 * 6 * 6, 16), TopK(), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gate2(self.conv2(self.gate1(self.norm(self.conv(x)))))
        return self.out(self.gate3(self.fc(h.flatten(1))))


def make_net() -> nn.Module:
    return Net()


FACTORY = f"{__name__}:make_net"


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "net.pt"
    torch.save(make_net().state_dict(), path)
    return path


def test_the_dry_run_names_the_critical_flags_of_a_bpda_layer_that_is_no_gate(tmp_path: Path, weights: Path,
                                                                               capsys: pytest.CaptureFixture,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    rc = main(["evaluate", "--model-factory", FACTORY, "--weights", str(weights), "--config", str(config),
               "--bpda-layer", "Norm", "--dry-run"])
    out = capsys.readouterr().out.replace("\n  ", " ")
    assert rc == 0 and "bpda acts on: norm (wrapped module)" in out
    flagged = [line for line in out.splitlines() if line.startswith("- the run will flag")]
    assert len(flagged) == 2, flagged
    head = "- the run will flag, from the layer probe and the BPDA layers: "
    assert flagged[0].startswith(head + "critical gates-without-bpda: the layer probe found top-k gate(s) gate1 "
                                        "(TopK), gate2 (TopK), gate3 (TopK)")
    assert "add bpda (bpda_layers: auto)" in flagged[0]
    assert flagged[1].startswith(head + "critical bpda-straight-through: bpda passed the gradient straight through "
                                        "norm (Norm; 4 parameters)")
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.parametrize("layers", [["Norm"], ["auto"], ["Norm", "gate*"]])
def test_the_dry_run_raises_what_the_run_raises_from_its_layers(tmp_path: Path, weights: Path,
                                                                layers: list[str]) -> None:
    cfg = EvalConfig.from_dict({**CONFIG, "bpda_layers": layers})
    plan = dry_run_one(cfg, model_factory=FACTORY, weights=str(weights), out=tmp_path / "r.json")
    record, _ = evaluate_one(cfg, model_factory=FACTORY, weights=str(weights), out=tmp_path / "r.json",
                             progress=False)
    raised = [(f.code, f.severity, f.message) for f in record.diagnostics if f.code in LAYER_CHECKS]
    assert [(f.code, f.severity, f.message) for f in plan.models[0].layer_flags] == raised
    codes = {code for code, _, _ in raised}
    assert codes == ({"gates-without-bpda", "bpda-straight-through"} if layers == ["Norm"] else
                     {"bpda-straight-through"} if "Norm" in layers else set())
