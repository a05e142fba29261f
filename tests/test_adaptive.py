"""Gradient estimation over Gaussian noise and EOT (attacks/adaptive.py) on linear models with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.adaptive import EOTGradient, LOSSES, estimate_gradient, sample_schedule
from attacks.base import AttackConfigError, attack_info, margin_loss

DIM = 64


class TwoClassLinear(nn.Module):
    """logits = [0, w · (x - 0.5)]: class 1 iff ``w · (x - 0.5) > 0``; ``w`` in {-1, +1}^D.

    The margin of class 0 is exactly linear, ``w · (x - 0.5)``, and the Linf distance of ``x`` to the boundary is
    ``|w · (x - 0.5)| / ||w||_1``.
    """

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x: Tensor) -> Tensor:
        score = (x.flatten(1) - 0.5) @ self.w
        return torch.stack([torch.zeros_like(score), score], dim=1)


class Recorder(nn.Module):
    """Wraps a model and keeps every input row it is queried with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.queries: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.queries.append(x.detach().clone())
        return self.model(x)


class InputDropout(nn.Module):
    """A randomized defense: inverted dropout on the input *in eval mode* (global RNG, as such models do)."""

    def __init__(self, model: nn.Module, p: float = 0.5) -> None:
        super().__init__()
        self.model = model
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        keep = (torch.rand_like(x) >= self.p).to(x.dtype) / (1 - self.p)
        return self.model(x * keep)


def sign_vector(seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (DIM,), generator=gen).float() * 2 - 1


def points_at_distance(w: Tensor, distances: list[float]) -> tuple[Tensor, Tensor]:
    """Points of class 0 at the given Linf distances from the boundary: ``x = 0.5 - t · w``."""
    t = torch.tensor(distances)[:, None]
    return 0.5 - t * w[None, :], torch.zeros(len(distances), dtype=torch.long)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


# --- gradient estimation -------------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert attack_info("gradient-estimation").kind == "adaptive" and attack_info("eot").kind == "adaptive"
    assert create_attack("gradient-estimation").name == "gradient-estimation"
    assert create_attack("eot", eot_samples=7).name == "eot-pgd(7)"


def test_sample_schedule_grows_linearly() -> None:
    assert sample_schedule(10, 50, 5) == [10, 20, 30, 40, 50]
    assert sample_schedule(20, 200, 1) == [200]


def test_estimated_gradient_points_along_the_true_gradient() -> None:
    # For a linear loss L(x) = g·x the antithetic estimate is (1/n) Σ (g·u_i) u_i, unbiased, with
    # E[cos²(ĝ, g)] ≈ n / (n + D + 1); with n = 2000 samples in D = 64 dimensions that is ≈ 0.969, cos ≈ 0.984.
    # We require cos > 0.95 for every row (the estimate's spread at this n is about 0.005).
    w = sign_vector()
    model = TwoClassLinear(w)
    x, y = points_at_distance(w, [0.05, 0.1, 0.2, 0.3])
    gen = torch.Generator().manual_seed(0)
    estimate = estimate_gradient(model, x, y, margin_loss, samples=2000, sigma=0.05, generator=gen,
                                 query_batch_size=4096)
    true_grad = w.expand_as(x)  # d/dx [z_1 - z_0] = w for label 0
    assert bool((cosine(estimate, true_grad) > 0.95).all()), cosine(estimate, true_grad)
    # the scale is right too: |ĝ| ≈ |w| = 8 within the estimator's spread
    assert torch.allclose(estimate.norm(dim=1), true_grad.norm(dim=1), rtol=0.1)


def test_gradient_estimation_breaks_exactly_the_points_inside_the_ball() -> None:
    w = sign_vector(1)
    model = TwoClassLinear(w)
    x, y = points_at_distance(w, [0.02, 0.04, 0.15, 0.3])
    threat = ThreatModel("linf", 0.1)
    attack = create_attack("gradient-estimation", steps=20, samples_start=20, samples_end=60)
    x_adv = attack(model, x, y, threat)
    assert bool(threat.contains(x_adv, x).all())
    with torch.no_grad():
        broken = model(x_adv).argmax(1) != y
    assert broken.tolist() == [True, True, False, False]


def test_early_stop_spends_no_queries_on_misclassified_samples() -> None:
    # Three well-separated samples (constant images): robust (far from the boundary), misclassified from the start,
    # and breakable. Each recorded query is attributed to the nearest sample.
    w = torch.ones(DIM)
    model = Recorder(TwoClassLinear(w))
    x = torch.stack([torch.full((DIM,), v) for v in (0.15, 0.85, 0.46)])
    y = torch.zeros(3, dtype=torch.long)  # sample 1 (0.85 > 0.5) is misclassified already
    threat = ThreatModel("linf", 0.1)
    steps, start, end = 10, 4, 12
    attack = create_attack("gradient-estimation", steps=steps, samples_start=start, samples_end=end)
    x_adv = attack(model, x, y, threat)

    queries = torch.cat(model.queries)
    owner = torch.cdist(queries, x).argmin(dim=1)
    per_sample = torch.bincount(owner, minlength=3)
    assert int(per_sample.sum()) == attack.last_total_queries == len(queries)
    assert per_sample.tolist() == attack.last_queries.tolist()
    full_budget = 1 + sum(2 * n + 1 for n in sample_schedule(start, end, steps))
    assert attack.last_queries[0] == full_budget  # robust: attacked with every iteration's samples
    assert attack.last_queries[1] == 1  # misclassified: only the initial check, never probed
    with torch.no_grad():
        assert bool((model(x_adv).argmax(1) != y)[2])
    assert 1 < attack.last_queries[2] < full_budget  # broken: stopped being queried once misclassified


@pytest.mark.parametrize("random_start", [False, True])
def test_query_count_matches_what_the_model_saw(random_start: bool) -> None:
    w = sign_vector(3)
    model = Recorder(TwoClassLinear(w))
    x, y = points_at_distance(w, [0.01, 0.05, 0.3])
    attack = create_attack("gradient-estimation", steps=6, samples_start=3, samples_end=9, random_start=random_start,
                           query_batch_size=16)  # small query batches: many chunks per iteration
    attack(model, x, y, ThreatModel("linf", 0.1))
    assert attack.last_total_queries == sum(len(q) for q in model.queries) == int(attack.last_queries.sum())
    assert max(len(q) for q in model.queries) <= 16


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"samples_start": 0}, "samples_start"),
        ({"sigma": -0.1}, "sigma"),
        ({"step_size": 0}, "step_size"),
        ({"loss": "hinge"}, "loss"),
        ({"query_batch_size": 1}, "query_batch_size"),
    ],
)
def test_gradient_estimation_rejects_bad_parameters(params: dict, field: str) -> None:
    with pytest.raises(AttackConfigError, match=field):
        create_attack("gradient-estimation", **params)


def test_default_sigma_matches_the_threat_model() -> None:
    attack = create_attack("gradient-estimation")
    x = torch.zeros(2, 1, 8, 8)
    assert attack.default_sigma(x, ThreatModel("linf", 0.1)) == pytest.approx(0.1)
    assert attack.default_sigma(x, ThreatModel("l2", 1.6)) == pytest.approx(1.6 / math.sqrt(64))


# --- EOT ------------------------------------------------------------------------------------------------------


def test_l2_default_step_crosses_the_ball_despite_a_noisy_estimate() -> None:
    """A normalised L2 step along an estimate from few noise pairs advances only its cosine with the gradient: with
    Madry's 2.5 eps / steps the attack got 0.62 eps out here, a linear model's margin climbing
    all the while; the L2 default divides by the expected cosine."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        model[1].bias[0] = 1e3  # class 0 wins everywhere in the ball: nothing is broken, every step is taken
    x, y = 0.3 + 0.4 * torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    threat = ThreatModel("l2", 1.0)
    attack = create_attack("gradient-estimation", steps=20, samples_start=5, samples_end=15, seed=0)
    reached = threat.distance(attack(model, x, y, threat), x)
    assert float(reached.mean()) > 0.9 * threat.eps
    linf = ThreatModel("linf", 0.1)
    assert attack.default_step(x, linf, [10] * 20) == 2.5 * 0.1 / 20
    assert math.isclose(attack.default_step(x, threat, [10] * 20), 2.5 / 20 / math.sqrt(20 / 784))


def test_eot_gradient_of_a_deterministic_model_is_the_gradient() -> None:
    w = sign_vector()
    model = TwoClassLinear(w)
    x, y = points_at_distance(w, [0.1, 0.2])
    assert_single_pass(model, x, y, *EOTGradient(LOSSES["ce"], samples=4, batch_size=3)(model, x, y))


def assert_single_pass(model: nn.Module, x: Tensor, y: Tensor, grad: Tensor, loss: Tensor, margin: Tensor) -> None:
    """EOT's ``grad``, ``loss`` and ``margin`` over a deterministic ``model`` are one pass's: the cross-entropy's
    input gradient by autograd, the per-sample cross-entropy and the margin."""
    xr = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    assert torch.allclose(grad, expected, atol=1e-6)
    assert torch.allclose(loss, F.cross_entropy(model(x), y, reduction="none"))
    assert torch.allclose(margin, margin_loss(model(x), y))


def test_eot_gradient_averages_out_the_randomness() -> None:
    # With input dropout (keep prob 1/2, inverted scaling) the margin gradient of one pass is w ⊙ m / 0.5, whose
    # cosine with the expected gradient w is sqrt(1/2) ≈ 0.71 in expectation; averaging S = 200 passes gives
    # cos ≈ 1 / sqrt(1 + 1/S) ≈ 0.998. Require > 0.95 for EOT and < 0.85 for a single pass.
    w = sign_vector()
    model = InputDropout(TwoClassLinear(w))
    x, y = points_at_distance(w, [0.1, 0.2, 0.3])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        single, _, _ = EOTGradient(LOSSES["margin"], samples=1, batch_size=4096)(model, x, y)
        averaged, _, _ = EOTGradient(LOSSES["margin"], samples=200, batch_size=256)(model, x, y)
    assert bool((cosine(averaged, w.expand_as(x)) > 0.95).all())
    assert bool((cosine(single, w.expand_as(x)) < 0.85).all())


def test_eot_attack_on_a_randomized_model_is_seeded_and_keeps_the_global_rng() -> None:
    w = sign_vector(2)
    model = InputDropout(TwoClassLinear(w))
    x, y = points_at_distance(w, [0.03, 0.06, 0.2, 0.4])
    threat = ThreatModel("linf", 0.1)
    state = torch.get_rng_state()
    first = create_attack("eot", steps=10, eot_samples=20, loss="margin", seed=3)(model, x, y, threat)
    assert torch.equal(torch.get_rng_state(), state), "EOT changed the caller's global RNG state"
    second = create_attack("eot", steps=10, eot_samples=20, loss="margin", seed=3)(model, x, y, threat)
    assert torch.equal(first, second)
    assert bool(threat.contains(first, x).all())
    with torch.no_grad():  # judged on the expected (noise-free) model: the points within eps are broken
        broken = TwoClassLinear(w)(first).argmax(1) != y
    assert broken.tolist() == [True, True, False, False]


@pytest.mark.parametrize(("params", "field"), [({"eot_samples": 0}, "eot_samples"), ({"loss": "dlr"}, "loss")])
def test_eot_rejects_bad_parameters(params: dict, field: str) -> None:
    with pytest.raises(AttackConfigError, match=field):
        create_attack("eot", **params)
