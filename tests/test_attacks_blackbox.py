"""Black-box attacks: Square (score-based), HopSkipJump and Boundary (decision-based through foolbox)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from attacks import create_attack
from attacks.base import AttackConfigError, ThreatModel

from attack_fixtures import boundary_distance, linear_binary, trained_cnn

CASES = [
    ("square", {"n_queries": 200}, "linf"),
    ("square", {"n_queries": 100}, "l2"),
    ("hopskipjump", {"steps": 5, "max_gradient_eval_steps": 200, "init_directions": 100}, "linf"),
    ("hopskipjump", {"steps": 5, "max_gradient_eval_steps": 200, "init_directions": 100}, "l2"),
    ("boundary", {"steps": 200, "init_directions": 100}, "l2"),
]


def _robust(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(dim=1) == y


@pytest.mark.parametrize(("name", "params", "norm"), CASES, ids=[f"{n}-{m}" for n, _, m in CASES])
def test_linear_model(name: str, params: dict, norm: str) -> None:
    """On a linear 2-class model the exact robust set is known: points beyond eps must stay correct (else the
    attack left the ball). Every sample comes back either misclassified or exactly as it was (failures return
    the clean input), and the attack does break some of the points within half of eps of the boundary."""
    model, x, y = linear_binary()
    dist = boundary_distance(model, x, y, norm)
    eps = float(dist.median())
    threat = ThreatModel(norm, eps)
    x_adv = create_attack(name, **params)(model, x, y, threat)
    robust = _robust(model, x_adv, y)
    assert bool(threat.contains(x_adv, x).all())
    assert bool(robust[dist > eps * 1.0001].all())
    assert not bool(robust[dist < 0.5 * eps].all())
    unchanged = (x_adv == x).flatten(1).all(dim=1)
    assert bool((~robust | unchanged).all())


def test_square_breaks_relu_cnn() -> None:
    model, x, y = trained_cnn("relu")
    x, y = x[:32], y[:32]
    threat = ThreatModel("linf", 0.3)
    x_adv = create_attack("square", n_queries=200)(model, x, y, threat)
    clean, robust = _robust(model, x, y), _robust(model, x_adv, y)
    assert bool((robust <= clean).all())
    assert int(robust.sum()) < int(clean.sum())


class _Constant(nn.Module):
    """Predicts class 0 for every input: no adversarial example exists for label 0."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([2.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], 2) + 0 * x.flatten(1).sum(dim=1, keepdim=True)


@pytest.mark.parametrize("name", ["hopskipjump", "boundary"])
def test_failed_starting_points_return_clean_inputs_with_a_warning(name: str, caplog) -> None:
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(6, dtype=torch.long)
    attack = create_attack(name, steps=2, init_directions=5, init_steps=5)
    with caplog.at_level(logging.WARNING, logger="attacks.blackbox"):
        x_adv = attack(_Constant(), x, y, ThreatModel("l2", 1.0))
    assert torch.equal(x_adv, x)
    assert "no adversarial starting point for 6 of 6 samples" in caplog.text


class _DarkDetector(nn.Module):
    """Class 1 iff every pixel is below 0.1, else class 0: uniform noise is (practically) never class 1, so no
    starting point exists for class-0 inputs, while class-1 inputs are easy to break."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale * (x.flatten(1).amax(dim=1) - 0.1)
        return torch.stack([s, -s], dim=1)


@pytest.mark.parametrize("name", ["hopskipjump", "boundary"])
def test_partial_start_failure_keeps_the_rest_of_the_batch(name: str, caplog) -> None:
    gen = torch.Generator().manual_seed(0)
    dark = 0.05 * torch.rand(4, 1, 8, 8, generator=gen)
    bright = 0.5 + 0.5 * torch.rand(4, 1, 8, 8, generator=gen)
    x = torch.cat([dark, bright])
    y = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    model = _DarkDetector()
    with caplog.at_level(logging.WARNING, logger="attacks.blackbox"):
        x_adv = create_attack(name, steps=5, init_directions=20)(model, x, y, ThreatModel("l2", 1.0))
    assert "no adversarial starting point for 4 of 8 samples" in caplog.text
    assert torch.equal(x_adv[4:], x[4:])
    assert not bool(_robust(model, x_adv[:4], y[:4]).any())


def test_boundary_is_l2_only() -> None:
    model, x, y = linear_binary()
    with pytest.raises(AttackConfigError, match="'boundary' does not support norm 'linf'"):
        create_attack("boundary", steps=2)(model, x, y, ThreatModel("linf", 0.1))


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("square", {"n_queries": 0}, "n_queries"), ("square", {"p_init": 1.5}, "p_init"),
        ("square", {"loss": "dlr"}, "loss"), ("hopskipjump", {"stepsize_search": "line"}, "stepsize_search"),
        ("hopskipjump", {"gamma": -1.0}, "gamma"), ("boundary", {"source_step": 0}, "source_step"),
    ],
)
def test_invalid_parameters(name: str, params: dict, field: str) -> None:
    with pytest.raises(AttackConfigError, match=field):
        create_attack(name, **params)


def test_square_autoattack_defaults() -> None:
    square = create_attack("square")
    assert (square.n_queries, square.p_init, square.restarts, square.loss, square.rescale_schedule) == (
        5000, 0.8, 1, "margin", False,
    )


class _BrightnessThreshold(nn.Module):
    """Class 1 iff the mean pixel is above 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(dim=1)
        return torch.stack([0.5 - m, m - 0.5], dim=1)


def test_foolbox_queries_adversarial_in_the_ball_are_kept() -> None:
    from attacks.blackbox import _InBallAdversarialKeeper
    from attacks.thirdparty import UnitInputView

    model = _BrightnessThreshold()
    x, y = torch.full((3, 1, 4, 4), 0.4), torch.zeros(3, dtype=torch.long)
    keeper = _InBallAdversarialKeeper(UnitInputView(model, (1, 4, 4), (0.0, 1.0)), x, y, ThreatModel("linf", 0.2))
    # row 0: in the ball and class 1 (kept); row 1: class 1 but outside the ball; row 2: in the ball, still class 0
    logits = keeper(torch.stack([torch.full((1, 4, 4), v) for v in (0.55, 0.7, 0.45)]))
    assert torch.equal(logits, model(torch.stack([torch.full((1, 4, 4), v) for v in (0.55, 0.7, 0.45)])))
    assert keeper.found.tolist() == [True, False, False]
    keeper(torch.full((2, 1, 4, 4), 0.58))  # not one row per sample: not read
    assert keeper.found.tolist() == [True, False, False]
    keeper.attack_only(torch.tensor([2, 0]))  # the attack runs on samples 2 and 0
    keeper(torch.stack([torch.full((1, 4, 4), 0.58), torch.full((1, 4, 4), 0.59)]))
    assert keeper.found.tolist() == [True, False, True]
    assert torch.equal(keeper.kept[0], torch.full((1, 4, 4), 0.55))  # the first found stays
    assert torch.equal(keeper.kept[2], torch.full((1, 4, 4), 0.58)) and torch.equal(keeper.kept[1], x[1])


def test_the_query_cap_counts_per_sample_and_stops_before_passing_it() -> None:
    from attacks.blackbox import _InBallAdversarialKeeper, _QueryCapReached
    from attacks.thirdparty import UnitInputView

    x, y = torch.full((3, 1, 4, 4), 0.4), torch.zeros(3, dtype=torch.long)
    keeper = _InBallAdversarialKeeper(UnitInputView(_BrightnessThreshold(), (1, 4, 4), (0.0, 1.0)), x, y,
                                      ThreatModel("linf", 0.2), max_queries=4)
    keeper(x)
    keeper(torch.cat([x, x]))  # six rows for three samples: two queries each
    assert keeper.spent == [3, 3, 3]
    keeper.attack_only(torch.tensor([2]))
    keeper(x[:1])
    assert keeper.spent == [3, 3, 4]
    with pytest.raises(_QueryCapReached):
        keeper(x[:1])  # a fifth query for sample 2
    assert keeper.spent == [3, 3, 4]
    keeper.attack_only(torch.tensor([0, 1]))
    keeper(x[:2])
    assert keeper.spent == [4, 4, 4]


FOOLBOX_CASES = [case for case in CASES if case[0] in ("hopskipjump", "boundary")]


@pytest.mark.parametrize(("name", "params", "norm"), FOOLBOX_CASES, ids=[f"{n}-{m}" for n, _, m in FOOLBOX_CASES])
def test_max_queries_bounds_the_queries_and_keeps_a_subset_of_the_kills(name: str, params: dict, norm: str) -> None:
    """HopSkipJump and Boundary had no query cap (Chen et al. report HopSkipJump at 1K / 5K / 20K queries). With
    ``max_queries`` the model sees at most that many queries per attacked sample (plus the one forward that picks
    the correctly classified samples); the capped run is a prefix of the uncapped one with the same seed, so what it
    breaks the uncapped run breaks too, and every output stays in the ball."""
    from attacks.queries import count_queries

    model, x, y = linear_binary()
    threat = ThreatModel(norm, float(boundary_distance(model, x, y, norm).median()))
    params = {**params, "init_directions": 20}
    with count_queries(model) as full:
        uncapped = create_attack(name, **params)(model, x, y, threat)
    cap = 60
    with count_queries(model) as count:
        capped = create_attack(name, **params, max_queries=cap)(model, x, y, threat)
    assert count.forwards <= len(y) + cap * len(y) < full.forwards
    assert bool(threat.contains(capped, x).all())
    broken_capped, broken_full = ~_robust(model, capped, y), ~_robust(model, uncapped, y)
    assert bool((broken_full | ~broken_capped).all()) and int(broken_capped.sum()) > 0
    unchanged = (capped == x).flatten(1).all(dim=1)
    assert bool((broken_capped | unchanged).all())


@pytest.mark.parametrize("name", ["hopskipjump", "boundary"])
def test_max_queries_must_be_a_positive_integer(name: str) -> None:
    for bad in (0, -5, 2.5):
        with pytest.raises(AttackConfigError, match="max_queries"):
            create_attack(name, max_queries=bad)
