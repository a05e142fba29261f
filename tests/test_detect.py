"""The layer probe (kwta_robust/detect.py): top-k gates of every grouping, piecewise-constant and randomized
layers are found with their evidence; element-wise activations, identities and dropout are not; the model and the
global RNG are left untouched."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.bpda_layers import resolve_bpda_layers
from kwta_robust.detect import Detection, detect_layers
from kwta_robust.errors import ConfigError
from kwta_robust.layers import KWTA2d
from kwta_robust.snapshot import ModelSnapshot
from test_bpda_any_module import ForeignTopK, Step


class BoostedKWinners(nn.Module):
    """Numenta-style k-winners: winners chosen on boosted scores (fixed per-unit boost), output = input there."""

    def __init__(self, units: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.register_buffer("boost", torch.linspace(0.5, 2.0, units))

    def forward(self, x: Tensor) -> Tensor:
        winners = (x * self.boost).topk(self.k, dim=1).indices
        return x * torch.zeros_like(x).scatter_(1, winners, 1.0)


class Round(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * 4) / 4


class StraightThroughRound(nn.Module):
    """Already BPDA'd by its author: rounding forward, identity backward — not piecewise constant to attacks."""

    def forward(self, x: Tensor) -> Tensor:
        return x + (torch.round(x * 4) / 4 - x).detach()


class Noise(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x + 0.1 * torch.randn_like(x)


def seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def cnn(*acts: nn.Module) -> nn.Sequential:
    """``[N, 1, 8, 8]``: conv → act0 → conv → act1 → flatten → linear → act2 → linear."""
    return seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), acts[0], nn.Conv2d(4, 6, 3, padding=1), acts[1], nn.Flatten(),
        nn.Linear(384, 24), acts[2], nn.Linear(24, 3),
    )).eval()


X = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(5))


def kinds(detection: Detection) -> dict[str, tuple[list[str], str | None]]:
    return {f.name: (f.kinds, f.grouping) for f in detection.layers}


def test_gates_of_every_grouping_are_found_with_their_evidence() -> None:
    model = cnn(ForeignTopK(0.2, "channel"), ForeignTopK(0.5, "local"), ForeignTopK(0.25))
    found = detect_layers(model, X)
    assert kinds(found) == {"1": (["gate"], "channel"), "3": (["gate"], "local"), "6": (["gate"], "dense")}
    assert found.probed == 8 and found.n == 32 and found.bpda_capable == []
    evidence = found.finding("1").evidence
    assert (evidence["k"], evidence["group_size"], evidence["groups"]) == (12, 64, 32 * 4)
    assert evidence["mask_agreement"] == 1.0 and evidence["k_constant_fraction"] == 1.0
    assert evidence["competing_fraction"] > 0.1 and evidence["shape"] == [32, 4, 8, 8]
    assert found.finding("6").evidence["k"] == 6


def test_relu_identity_dropout_and_pooling_are_not_gates() -> None:
    model = cnn(nn.ReLU(), nn.Dropout(0.5), nn.Identity())
    assert detect_layers(model, X).layers == []
    always_on = seeded(lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    with torch.no_grad():  # the same 3 units are positive for every input: a constant count, but no competition
        always_on[0].bias.copy_(torch.tensor([5.0, 5.0, 5.0, -5.0, -5.0, -5.0, -5.0, -5.0]))
    assert detect_layers(always_on, torch.rand(16, 4)).layers == []
    pooled = seeded(lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU(inplace=True), nn.Flatten(),
                                          nn.LazyLinear(3)))
    pooled(X)
    assert detect_layers(pooled, X).layers == []


def test_a_gate_whose_winners_never_change_is_still_found() -> None:
    """The same units win for every sample (no competition visible in the batch), or a batch of one: the winner
    count that stays k when the input shifts tells the gate from the always-on ReLU above."""
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 8), ForeignTopK(0.375), nn.Linear(8, 2)))
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([5.0, 5.0, 5.0, -5.0, -5.0, -5.0, -5.0, -5.0]))
    for x in (torch.rand(16, 4), torch.rand(1, 4)):
        found = detect_layers(model, x)
        assert kinds(found) == {"1": (["gate"], "dense")}
        assert found.finding("1").evidence["competing_positions"] == 0


def test_boosted_kwinners_and_our_layer_are_gates() -> None:
    model = cnn(KWTA2d(ratio=0.1), nn.ReLU(), BoostedKWinners(24, 5))
    found = detect_layers(model, X)
    assert kinds(found) == {"1": (["gate"], "volume"), "6": (["gate"], "dense")}
    assert found.finding("1").native and not found.finding("6").native
    assert found.bpda_capable == ["1"]
    assert found.finding("6").evidence["ordered_fraction"] < 1.0  # chosen on boosted scores, not by value


def test_piecewise_constant_and_randomized_layers() -> None:
    model = seeded(lambda: nn.Sequential(Round(), nn.Flatten(), nn.Linear(64, 16), Step(), nn.Linear(16, 8), Noise(),
                                         StraightThroughRound(), nn.Linear(8, 3))).eval()
    found = detect_layers(model, X)
    assert kinds(found) == {"0": (["piecewise-constant"], None), "3": (["piecewise-constant"], None),
                            "5": (["randomized"], None)}
    evidence = found.finding("0").evidence
    assert evidence["input_gradient"] == "zero" and evidence["changed_output_fraction"] > 0
    assert found.finding("5").evidence["max_call_difference"] > 0.01
    assert set(found.auto_targets()) == {"0", "3"}


def test_probe_leaves_model_and_global_rng_untouched() -> None:
    model = cnn(KWTA2d(ratio=0.1), Noise(), ForeignTopK(0.25)).train()
    before = ModelSnapshot.capture(model)
    state = torch.random.get_rng_state()
    first = detect_layers(model, X, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    before.verify(model, "the probe")  # state, training flags (train mode kept), requires_grad, hooks
    assert all(p.grad is None for p in model.parameters())
    second = detect_layers(model, X, seed=3)
    first.wall_time_s = second.wall_time_s = 0.0
    assert first == second  # seeded: the same evidence


def test_shared_module_called_twice_is_one_finding() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.gate = nn.Linear(6, 12), nn.Linear(12, 12), ForeignTopK(0.25)

        def forward(self, x: Tensor) -> Tensor:
            return self.gate(self.b(self.gate(self.a(x))))

    found = detect_layers(seeded(Twice), torch.rand(16, 6))
    assert kinds(found) == {"gate": (["gate"], "dense")} and found.finding("gate").evidence["calls"] == 2


def test_record_round_trip_and_resolution() -> None:
    model = cnn(KWTA2d(ratio=0.1), nn.ReLU(), ForeignTopK(0.25))
    found = detect_layers(model, X)
    again = Detection.from_dict(found.to_dict())
    assert again == found
    targets = resolve_bpda_layers(model, ["auto"], again)
    assert {n: t.describe() for n, t in targets.items()} == {"1": "gate/volume", "6": "gate/dense"}
    explicit = resolve_bpda_layers(model, ["ReLU", "6"], again)
    assert {n: t.describe() for n, t in explicit.items()} == {"3": "module", "6": "gate/dense"}
    with pytest.raises(ConfigError, match=r"attacks\[x\].bpda_layers: 'feature.1' matches no module"):
        resolve_bpda_layers(model, ["feature.1"], again, "attacks[x].bpda_layers")
