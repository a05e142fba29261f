"""The scientific check of the attack suite: kWTA masks gradients, adaptive attacks see through it.

Xiao et al. (ICLR 2020) reported kWTA networks robust under plain PGD; Tramèr et al. (NeurIPS 2020) showed the
robustness comes from gradient masking (a very small k makes the network's input→output map highly
discontinuous) and broke it with BPDA and gradient estimation. This test reproduces the effect on a small MLP with
dense kWTA layers at a low ratio (k = 7 of 256 units) trained on scikit-learn's 8×8 digits:

* plain PGD leaves many samples robust at a moderate Linf eps (0.15 of the [0, 1] range, ≈ 2.4 of 16 grey levels):
  at least twice the per-sample worst case over the adaptive attacks below;
* BPDA with the smooth surrogate, BPDA with the learned and model surrogates, and the gradient-estimation attack
  each break significantly more of them (paired comparison, see :func:`assert_significantly_stronger`);
* the ReLU twin (same architecture, ReLU, same training) falls to PGD at a large eps (0.3): what PGD should do
  when gradients are not masked.

Robust accuracy is always measured by re-classifying the returned points after projecting them onto the threat
model (as the runner does) and the points are checked to lie in the ball.
"""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from kwta_robust.layers import KWTA

MODERATE_EPS = 0.15
LARGE_EPS = 0.3
N_EVAL = 200
KWTA_RATIO = 0.03  # k = floor(0.03 · 256) = 7 winners per layer: the gradient-masking regime


def mlp(activation: str) -> nn.Sequential:
    def act() -> nn.Module:
        return KWTA(ratio=KWTA_RATIO) if activation == "kwta" else nn.ReLU()

    return nn.Sequential(nn.Linear(64, 256), act(), nn.Linear(256, 256), act(), nn.Linear(256, 10))


def train(activation: str, x: Tensor, y: Tensor, seed: int = 0, epochs: int = 15) -> nn.Module:
    """Adam, mini-batches of 64; initialisation and shuffling seeded without touching the caller's RNG."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = mlp(activation)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def setup() -> dict:
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train_idx, test_idx = perm[:1400], perm[1400:1400 + N_EVAL]
    kwta_net = train("kwta", x[train_idx], y[train_idx])
    relu_net = train("relu", x[train_idx], y[train_idx])
    return {"kwta": kwta_net, "relu": relu_net, "x": x[test_idx], "y": y[test_idx]}


def robust_flags(model: nn.Module, x_adv: Tensor, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
    """Per sample: still classified correctly after projecting the attack's output onto the threat model."""
    projected = threat.project(x_adv, x)
    assert bool(threat.contains(x_adv, x, atol=1e-5).all()), "attack returned points outside the threat model"
    with torch.no_grad():
        return model(projected).argmax(1) == y


def assert_significantly_stronger(baseline: Tensor, stronger: Tensor, label: str) -> None:
    """Paired (McNemar) comparison of per-sample robust flags on the same samples.

    ``b``: samples robust under the baseline but broken by the stronger attack; ``c``: the reverse. Under the null
    hypothesis "both attacks are equally strong" ``b - c`` has mean 0 and standard deviation ``sqrt(b + c)``; we
    require ``b - c > 3 sqrt(b + c)`` (one-sided p < 0.0014), i.e. strictly lower robust accuracy by a margin that
    sampling noise cannot explain.
    """
    b = int((baseline & ~stronger).sum())
    c = int((~baseline & stronger).sum())
    assert b - c > 3 * math.sqrt(b + c), (
        f"{label}: not significantly stronger than plain PGD (b={b} newly broken, c={c} newly robust; "
        f"robust acc {baseline.float().mean():.3f} vs {stronger.float().mean():.3f})"
    )


@pytest.fixture(scope="module")
def pgd_on_kwta(setup: dict) -> dict:
    model, x, y = setup["kwta"], setup["x"], setup["y"]
    threat = ThreatModel("linf", MODERATE_EPS)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    x_adv = create_attack("pgd", steps=50, seed=0)(model, x, y, threat)
    return {"clean": clean, "robust": robust_flags(model, x_adv, x, y, threat), "threat": threat}


def test_models_are_accurate(setup: dict) -> None:
    with torch.no_grad():
        kwta_acc = (setup["kwta"](setup["x"]).argmax(1) == setup["y"]).float().mean().item()
        relu_acc = (setup["relu"](setup["x"]).argmax(1) == setup["y"]).float().mean().item()
    assert kwta_acc >= 0.8, f"kWTA net clean accuracy {kwta_acc:.3f}: the comparison below needs a working model"
    assert relu_acc >= 0.9, f"ReLU twin clean accuracy {relu_acc:.3f}"


def test_relu_twin_falls_to_pgd_at_large_eps(setup: dict) -> None:
    model, x, y = setup["relu"], setup["x"], setup["y"]
    threat = ThreatModel("linf", LARGE_EPS)
    robust = robust_flags(model, create_attack("pgd", steps=50, seed=0)(model, x, y, threat), x, y, threat)
    # "near everything": at most 2% of the samples (4 of 200) survive
    assert robust.float().mean() <= 0.02, f"ReLU twin robust accuracy {robust.float().mean():.3f} at eps {LARGE_EPS}"


ADAPTIVE_ATTACKS = {
    "bpda-smooth": ("bpda", {"surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 50}}),
    "bpda-smooth-schedule": (
        "bpda",
        {"surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 60}, "temperature_schedule": [3, 1, 0.3]},
    ),
    "bpda-learned": (
        "bpda",
        {"surrogate": "learned", "inner": "pgd", "inner_params": {"steps": 50}, "fit_steps": 100, "fit_hidden": 8},
    ),
    "bpda-model": (
        "bpda",
        {"surrogate": "model", "inner": "pgd", "inner_params": {"steps": 40}, "fit_steps": 100, "fit_hidden": 8,
         "distill_steps": 40},
    ),
    "gradient-estimation": ("gradient-estimation", {"steps": 30, "samples_start": 10, "samples_end": 30}),
}


@pytest.fixture(scope="module")
def robust_under(setup: dict, pgd_on_kwta: dict) -> Callable[[str], Tensor]:
    """``robust_under(label)``: per-sample robust flags of the kWTA net under an adaptive attack (computed once)."""
    model, x, y, threat = setup["kwta"], setup["x"], setup["y"], pgd_on_kwta["threat"]
    cache: dict[str, Tensor] = {}

    def run(label: str) -> Tensor:
        if label not in cache:
            name, params = ADAPTIVE_ATTACKS[label]
            cache[label] = robust_flags(model, create_attack(name, seed=0, **params)(model, x, y, threat), x, y, threat)
        return cache[label]

    return run


@pytest.mark.parametrize("label", list(ADAPTIVE_ATTACKS))
def test_adaptive_attacks_break_what_pgd_left(
    pgd_on_kwta: dict, robust_under: Callable[[str], Tensor], label: str
) -> None:
    robust = robust_under(label)
    assert not bool((robust & ~pgd_on_kwta["clean"]).any()), "a misclassified clean sample counted as robust"
    assert_significantly_stronger(pgd_on_kwta["robust"], robust, label)


def test_plain_pgd_overestimates_robustness(pgd_on_kwta: dict, robust_under: Callable[[str], Tensor]) -> None:
    # The masking itself: plain PGD's robust accuracy is at least twice the per-sample worst case over the
    # adaptive attacks, i.e. more than half of what PGD calls robust is not.
    worst = torch.stack([robust_under(label) for label in ADAPTIVE_ATTACKS]).all(dim=0)
    pgd_acc, worst_acc = pgd_on_kwta["robust"].float().mean().item(), worst.float().mean().item()
    assert pgd_acc >= 2 * worst_acc, f"plain PGD {pgd_acc:.3f} vs adaptive worst case {worst_acc:.3f}"
    assert_significantly_stronger(pgd_on_kwta["robust"], worst, "adaptive worst case")
