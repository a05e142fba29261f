"""The layer probe (kwta_robust/detect.py): top-k gates of every grouping, piecewise-constant and randomized
layers are found with their evidence; element-wise activations, identities and dropout are not; the model and the
global RNG are left untouched."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget
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
    assert found.target("5") == LayerTarget() and found.target("3") == LayerTarget("piecewise-constant")


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
    assert "k_per_shape" not in found.finding("gate").evidence  # one shape: k is the evidence's own

    class TwoShapes(Twice):  # the same gate on 12 and then 24 units: each shape's k is in the evidence and the notes
        def __init__(self) -> None:
            super().__init__()
            self.b = nn.Linear(12, 24)

    found = detect_layers(seeded(TwoShapes), torch.rand(16, 6))
    assert found.finding("gate").evidence["k_per_shape"] == [[[16, 12], 3, 12], [[16, 24], 6, 24]]
    from eval_helpers import make_record
    from kwta_robust.layer_text import layer_notes

    record = make_record()
    record.detection = found.to_dict()
    assert layer_notes(record) == ["layer probe (16 inputs, 3 leaf modules): gate (ForeignTopK): top-k gate (dense, "
                                   "k=3/12, 6/24 at its input shapes)"]


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


class ThresholdGate(nn.Module):
    """Third-party k-winners written with a threshold (``>=`` keeps every unit tied with the k-th): Numenta's
    ``KWinners2d`` on boosted scores (``score="boosted"``, a boost per channel, winners over C·H·W) or Xiao et al.'s
    ``Sparsify2D_abs`` (``score="magnitude"``, per channel); ``flatten``: the output is ``[N, C·H·W]``."""

    def __init__(self, k: int, score: str, flatten: bool = False) -> None:
        super().__init__()
        self.k, self.score, self.flatten = k, score, flatten

    def forward(self, x: Tensor) -> Tensor:
        if self.score == "boosted":
            boost = torch.linspace(0.6, 1.8, x.shape[1]).view(1, -1, 1, 1)
            s = (x * boost).flatten(1)
        else:
            s = x.abs().flatten(2)
        threshold = s.topk(self.k, dim=-1).values[..., -1:]
        out = x * (s >= threshold).reshape(x.shape)
        return out.flatten(1) if self.flatten else out


def tied(n: int = 16) -> Tensor:
    """``[n, 4, 6, 6]`` whose every channel holds one value at 24 of its 36 positions (a constant image background
    after a convolution), random values of either sign elsewhere."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(n, 4, 6, 6, generator=g) * 3 - 1.5
    background = torch.rand(n, 4, 1, 1, generator=g) * 0.5 + 0.9
    mask = torch.zeros(36, dtype=torch.bool)
    mask[torch.randperm(36, generator=g)[:24]] = True
    return torch.where(mask.view(1, 1, 6, 6), background.expand_as(x), x)


@pytest.mark.parametrize(("score", "k", "grouping"), [("boosted", 40, "volume"), ("magnitude", 10, "channel")])
def test_gates_hidden_by_ties_in_the_probe_batch_are_found(score: str, k: int, grouping: str) -> None:
    """Ties at the threshold of a score other than the value (boosted, |x|) make the counted winners vary, so the
    batch alone shows no constant k (``infer_grouping`` is None here); the probe repeats the call on the input moved
    by a hundredth of its std and finds the gate, its grouping and k."""
    from attacks.gates import infer_grouping

    gate, x = ThresholdGate(k, score), tied()
    assert infer_grouping(x, gate(x)) is None
    model = seeded(lambda: nn.Sequential(gate, nn.Flatten(), nn.Linear(144, 3))).eval()
    finding = detect_layers(model, x).finding("0")
    assert finding is not None and (finding.kinds, finding.grouping) == (["gate"], grouping)
    assert finding.evidence["k"] == k and finding.evidence["ties_broken"] == 1e-2
    assert "0" in detect_layers(model, x).auto_targets()


def test_a_gate_that_flattens_its_output_is_found_and_bpda_acts_on_it() -> None:
    """``[N, C, H, W] → [N, C·H·W]`` (the mask applied, then flattened): read in the input's shape, a volume gate
    (on boosted scores); BPDA's smooth surrogate gives the relaxed gate's gradient, reshaped."""
    from attacks.gates import relaxed_gate
    from bpda_helpers import assert_bpda_matches_relaxed

    x = torch.rand(8, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    model = seeded(lambda: nn.Sequential(ThresholdGate(30, "boosted", flatten=True), nn.Linear(144, 3))).eval()
    detection = detect_layers(model, x)
    finding = detection.finding("0")
    assert (finding.kinds, finding.grouping, finding.evidence["k"]) == (["gate"], "volume", 30)
    assert finding.evidence["output_shape"] == [8, 144] and "ties_broken" not in finding.evidence
    factors = torch.tensor(finding.evidence["score_factors"])
    assert_bpda_matches_relaxed(model, detection.auto_targets(), "0", x, lambda t: model[1](relaxed_gate(
        t, model[0](t.detach()).reshape(t.shape), "volume", 0.1, "boosted", factors).flatten(1)))
