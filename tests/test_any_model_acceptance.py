"""Issue 7, acceptance tests 5(a) and 5(b): BPDA and detection on models this package did not build.

(a) A kWTA CNN whose top-k modules are written here (our re-implementation of Xiao et al.'s ``Sparsify2D_vol`` and
``Sparsify1D``, not ``kwta_robust.layers``), trained briefly on mnist5k: the layer probe finds every gate, BPDA
identity and smooth change the gradient, and the worst case at Linf 0.1 of a CPU-sized adaptive suite run by the
harness is within 2 points of an independent reference written here (straight-through PGD on the margin loss,
then gradient estimation on what survives).
(b) A rounding layer in front of a small MLP is detected as piecewise constant and flagged.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import margin_loss
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import attached_backward
from kwta_robust.config import EvalConfig
from kwta_robust.data import load_dataset
from kwta_robust.detect import detect_layers
from kwta_robust.evaluate import evaluate

EPS = 0.1
N_EXAMPLES = 100


class SparsifyVolume(nn.Module):
    """Xiao et al.'s ``Sparsify2D_vol``, re-implemented: per sample keep the entries ``>=`` the k-th largest of the
    C·H·W volume, ``k = int(ratio · C·H·W)``; ``[N, C, H, W] → [N, C, H, W]``."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def forward(self, x: Tensor) -> Tensor:
        flat = x.view(x.shape[0], -1)
        kth = flat.topk(int(self.ratio * flat.shape[1]), dim=1)[0][:, -1]
        return (x >= kth.view(-1, 1, 1, 1)).to(x) * x


class SparsifyDense(nn.Module):
    """Xiao et al.'s ``Sparsify1D``, re-implemented: ``[N, F] → [N, F]`` keeping the entries ``>=`` the k-th."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def forward(self, x: Tensor) -> Tensor:
        kth = x.topk(int(self.ratio * x.shape[1]), dim=1)[0][:, -1:]
        return (x >= kth).to(x) * x


class SparseCNN(nn.Module):
    """``[N, 1, 28, 28] → [N, 10]``: (conv 5×5, max-pool 2, Sparsify_vol 0.1) × 2, fc-64, Sparsify1D 0.1, fc-10."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 5, padding=2), nn.MaxPool2d(2), SparsifyVolume(0.1),
            nn.Conv2d(8, 16, 5, padding=2), nn.MaxPool2d(2), SparsifyVolume(0.1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 7 * 7, 64), SparsifyDense(0.1), nn.Linear(64, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class StraightThrough(nn.Module):
    """The reference's own BPDA: the wrapped gate's exact output, identity gradient (``x + (f(x) - x).detach()`` is
    exact here: ``x + 0`` and ``x + (0 - x)`` round to ``x`` and ``0``)."""

    def __init__(self, gate: nn.Module) -> None:
        super().__init__()
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.gate(x) - x).detach()


GATES = ["features.2", "features.5", "classifier.2"]


def train_briefly(build, dataset: str, epochs: int, lr: float, batch_size: int) -> nn.Module:
    """``build()`` trained with Adam on ``dataset``'s training split, seeded (the global RNG is restored)."""
    train = load_dataset(dataset, "train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build()
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        for batch in torch.cat([torch.randperm(len(train.y)) for _ in range(epochs)]).split(batch_size):
            loss = F.cross_entropy(model(train.x[batch]), train.y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, object]:
    """The CNN after three epochs on mnist5k's training split (about 90 % test accuracy)."""
    return train_briefly(SparseCNN, "mnist5k", epochs=3, lr=3e-3, batch_size=64), load_dataset("mnist5k", "test")


def reference_robust(model: SparseCNN, x: Tensor, y: Tensor, steps: int = 50, ge_steps: int = 10,
                     ge_pairs: int = 20) -> Tensor:
    """Independent reference: straight-through PGD (margin loss, ``steps`` signed steps of 2.5·eps/steps from x,
    on a copy of the model whose gates pass gradients unchanged), then gradient estimation (antithetic Gaussian
    differences of the margin, sigma = eps, ``ge_pairs`` pairs, ``ge_steps`` signed steps of 2.5·eps/ge_steps) on
    the samples PGD left robust. Returns per sample: robust (clean-correct and never misclassified): ``[N]`` bool."""
    twin = SparseCNN()
    twin.load_state_dict(model.state_dict())
    for name in GATES:
        parent, child = twin.get_submodule(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1]
        setattr(parent, child, StraightThrough(getattr(parent, child)))
    twin.eval()
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    x_adv = x.clone()
    for _ in range(steps):
        xg = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(margin_loss(twin(xg), y).sum(), xg)
        x_adv = (x + (x_adv + 2.5 * EPS / steps * grad.sign() - x).clamp(-EPS, EPS)).clamp(0, 1)
        with torch.no_grad():
            robust &= model(x_adv).argmax(1) == y
    generator = torch.Generator().manual_seed(0)
    idx = robust.nonzero().squeeze(1)
    xs, ys = x[idx].clone(), y[idx]
    with torch.no_grad():
        for _ in range(ge_steps):
            u = torch.randn((ge_pairs,) + xs.shape, generator=generator)
            probes = torch.cat([xs + EPS * u, xs - EPS * u]).flatten(0, 1)
            losses = margin_loss(model(probes), ys.repeat(2 * ge_pairs)).view(2, ge_pairs, -1)
            grad = ((losses[0] - losses[1]).view(ge_pairs, -1, 1, 1, 1) * u).sum(0)
            xs = (x[idx] + (xs + 2.5 * EPS / ge_steps * grad.sign() - x[idx]).clamp(-EPS, EPS)).clamp(0, 1)
            robust[idx] &= model(xs).argmax(1) == ys
    return robust


SUITE = [  # a CPU-sized adaptive suite; run independently, so the straight-through + GE part can be read off too
    {"attack": "pgd", "params": {"steps": 20, "loss": "ce"}},
    {"attack": "bpda", "label": "bpda-identity",
     "params": {"surrogate": "identity", "inner": "pgd",
                "inner_params": {"steps": 50, "loss": "margin", "random_start": False}}},
    {"attack": "bpda", "label": "bpda-smooth",
     "params": {"surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 40, "loss": "margin"},
                "temperature_schedule": [1.0, 0.3]}},
    {"attack": "gradient-estimation", "params": {"steps": 10, "samples_start": 10, "samples_end": 20}},
]


def robust_to(record, labels: list[str]) -> float:
    """Worst case over the attacks ``labels`` of an independent-mode record (per-sample flags)."""
    flags = [record.result(label, "linf", EPS).flags for label in labels]
    alive = [c == 1 and all(f[i] != 0 for f in flags) for i, c in enumerate(record.clean_flags)]
    return sum(alive) / len(alive)


def test_a_foreign_kwta_cnn_is_evaluated_like_ours(trained) -> None:
    model, data = trained
    x = data.x[:64]
    found = detect_layers(model, x)
    assert {f.name: (f.kinds, f.grouping) for f in found.layers} == {
        "features.2": (["gate"], "volume"), "features.5": (["gate"], "volume"), "classifier.2": (["gate"], "dense")}
    assert found.finding("features.5").evidence["k"] == int(0.1 * 16 * 7 * 7)
    targets = found.auto_targets()
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    y = logits.argmax(1)
    (exact,) = torch.autograd.grad(margin_loss(logits, y).sum(), xg)
    for spec in ("identity", "smooth"):
        with attached_backward(model, targets) as layers, surrogate_backward(model, spec, 1.0, layers):
            xg = x.clone().requires_grad_(True)
            switched = model(xg)
            (grad,) = torch.autograd.grad(margin_loss(switched, y).sum(), xg)
        assert torch.equal(switched.detach(), logits.detach())
        assert not torch.allclose(grad, exact, rtol=0.05, atol=1e-4), spec

    cfg = EvalConfig.from_dict({
        "dataset": "mnist5k", "n_examples": N_EXAMPLES, "batch_size": N_EXAMPLES, "device": "cpu", "seed": 0,
        "mode": "independent", "threats": [{"norm": "linf", "epsilons": [EPS]}], "attacks": SUITE,
    })
    record = evaluate(model, data, cfg, {"label": "sparse-cnn"}, progress=False)
    assert [f["name"] for f in record.detection["layers"]] == GATES
    acted = {"features.2": "wrapped gate/volume", "features.5": "wrapped gate/volume",
             "classifier.2": "wrapped gate/dense"}
    assert all(r.bpda_layers == acted for r in record.results if r.kind == "bpda")
    assert "bpda-no-layer" not in [f.code for f in record.diagnostics]
    idx = torch.tensor(record.dataset["indices"])
    reference = float(reference_robust(model, data.x[idx], data.y[idx]).float().mean())
    same_attacks = robust_to(record, ["bpda-identity", "gradient-estimation"])
    worst = record.worst("linf", EPS).robust.accuracy
    print(f"\nworst case at Linf {EPS} on {N_EXAMPLES} mnist5k images: reference (straight-through PGD + gradient "
          f"estimation) {100 * reference:.1f}%; harness, same attacks {100 * same_attacks:.1f}%, full suite "
          f"{100 * worst:.1f}%; suite wall time {record.provenance['wall_time_s']:.1f}s")
    assert abs(same_attacks - reference) <= 0.02 + 1e-9  # the wrapped gates reproduce the reference
    assert worst <= reference + 0.02 + 1e-9  # the full suite is at least as strong as the reference
    assert robust_to(record, ["pgd"]) - worst >= 0.05  # the gates mask plain PGD


class RoundInput(nn.Module):
    """Quantizes its input to 4 levels (a piecewise-constant 'defense')."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * 3) / 3


def test_b_a_rounding_layer_is_detected_and_flagged() -> None:
    model = train_briefly(lambda: nn.Sequential(nn.Flatten(), RoundInput(), nn.Linear(64, 32), nn.ReLU(),
                                                nn.Linear(32, 10)), "digits", epochs=5, lr=1e-2, batch_size=128)
    data = load_dataset("digits", "test")
    cfg = EvalConfig.from_dict({
        "dataset": "digits", "n_examples": 20, "batch_size": 20, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.2]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 5, "random_start": False}}],
    })
    record = evaluate(model, data, cfg, {"label": "rounded-mlp"}, progress=False)
    assert [(f["name"], f["kinds"]) for f in record.detection["layers"]] == [("1", ["piecewise-constant"])]
    flags = {f.code: f for f in record.diagnostics}
    assert flags["piecewise-constant-layers"].severity == "critical"  # no BPDA attack acted on it
    assert "layer 1 (RoundInput) has a zero input gradient" in flags["piecewise-constant-layers"].message
    assert "zero-gradients" in flags  # the model-level probe agrees
    with_bpda = cfg.with_overrides(attacks=[
        {"attack": "pgd", "params": {"steps": 5, "random_start": False}},  # zero gradient: PGD cannot move
        {"attack": "bpda", "params": {"surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 5}}},
    ])
    record = evaluate(model, data, with_bpda, {"label": "rounded-mlp"}, progress=False)
    bpda = record.result("bpda", "linf", 0.2)
    assert bpda.bpda_layers == {"1": "wrapped piecewise-constant"}
    assert bpda.n_broken > 0 and record.result("pgd", "linf", 0.2).n_broken == 0
    assert {f.code: f.severity for f in record.diagnostics}["piecewise-constant-layers"] == "warning"
    assert not math.isnan(record.worst("linf", 0.2).robust.accuracy)
