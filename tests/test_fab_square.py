"""FAB / FAB-T and Square, written here (issue 13): against torchattacks 3.5.1 (the reference, which runs every
sample for the full budget) on the same model, samples and seed; ball and bounds; determinism; the work saved."""

from __future__ import annotations

import logging

import pytest
import torch
import torchattacks
from torch import Tensor, nn
from torchattacks.attacks.fab import projection_l2, projection_linf

from attacks import ThreatModel, create_attack
from attacks.base import AttackConfigError
from attacks.fab import box_hyperplane_step
from attacks.square import p_at
from attack_fixtures import CountingModel, robust_flags, trained_cnn

#: FAB's iterates agree with the reference's up to rounding (it takes the gradient of f_j - f_y in one backward
#: pass instead of subtracting two, and solves the projection by Newton's method instead of a sorted bisection), so
#: a sample whose smallest adversarial lies within rounding of eps could flip: at most this many per direction.
FAB_FLAG_TOLERANCE = 1


@pytest.fixture(scope="module")
def cnn() -> tuple[nn.Module, Tensor, Tensor]:
    model, x, y = trained_cnn("relu")
    return model.requires_grad_(False), x[:64], y[:64]


@pytest.fixture(scope="module")
def kwta_cnn() -> tuple[nn.Module, Tensor, Tensor]:
    model, x, y = trained_cnn("kwta")
    return model.requires_grad_(False), x[:64], y[:64]


def reference(model: nn.Module, name: str, x: Tensor, y: Tensor, threat: ThreatModel, **params) -> Tensor:
    with torch.random.fork_rng(devices=[]):
        return getattr(torchattacks, name)(model, norm=threat.title, eps=threat.eps, seed=0, **params)(x, y)


# --- FAB -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("norm", "eps", "targeted", "restarts"), [("linf", 0.15, False, 2), ("l2", 0.6, False, 1),
                                                                   ("linf", 0.15, True, 1), ("l2", 0.6, True, 1)])
def test_fab_breaks_the_samples_the_full_budget_reference_breaks(cnn, norm, eps, targeted, restarts) -> None:
    model, x, y = cnn
    threat = ThreatModel(norm, eps)
    ours = create_attack("fab-t" if targeted else "fab", steps=15, restarts=restarts,
                         **({"n_target_classes": 3} if targeted else {}))
    x_adv = ours(model, x, y, threat)
    ref_adv = reference(model, "FAB", x, y, threat, steps=15, n_restarts=restarts, multi_targeted=targeted,
                        n_classes=4 if targeted else 10)
    ours_robust, ref_robust = robust_flags(model, x_adv, y), robust_flags(model, threat.project(ref_adv, x), y)
    assert 0 < int(ours_robust.sum()) < int(robust_flags(model, x, y).sum())  # the comparison is not trivial
    assert int(ours_robust.sum()) <= int(ref_robust.sum())  # robust accuracy no higher than the reference's
    assert int((ours_robust & ~ref_robust).sum()) <= FAB_FLAG_TOLERANCE
    assert int((~ours_robust & ref_robust).sum()) <= FAB_FLAG_TOLERANCE
    assert bool(threat.contains(x_adv, x).all())
    unchanged = (x_adv == x).flatten(1).all(dim=1)  # failures return the clean input, as in the reference
    assert bool((~ours_robust | unchanged).all())


@pytest.mark.parametrize("name", ["fab", "fab-t", "square"])
def test_kwta_cnn_same_samples_broken_as_the_reference(kwta_cnn, name: str) -> None:
    model, x, y = kwta_cnn
    threat = ThreatModel("linf", 0.1)
    if name == "square":
        x_adv = create_attack(name, n_queries=100)(model, x, y, threat)
        ref_adv = reference(model, "Square", x, y, threat, n_queries=100, n_restarts=1, p_init=0.8,
                            resc_schedule=False)
    else:
        x_adv = create_attack(name, steps=10, **({"n_target_classes": 3} if name == "fab-t" else {}))(
            model, x, y, threat)
        ref_adv = reference(model, "FAB", x, y, threat, steps=10, n_restarts=1, multi_targeted=name == "fab-t",
                            n_classes=4 if name == "fab-t" else 10)
    ours_robust, ref_robust = robust_flags(model, x_adv, y), robust_flags(model, threat.project(ref_adv, x), y)
    assert 0 < int(ours_robust.sum()) < int(robust_flags(model, x, y).sum())
    assert int(ours_robust.sum()) <= int(ref_robust.sum())
    tolerance = 0 if name == "square" else FAB_FLAG_TOLERANCE
    assert int((ours_robust != ref_robust).sum()) <= tolerance


def test_fab_stops_computing_samples_broken_within_eps(cnn) -> None:
    model, x, y = cnn
    wide, narrow = ThreatModel("linf", 0.3), ThreatModel("linf", 1e-3)
    work = {}
    for threat in (wide, narrow):
        counting = CountingModel(model)
        create_attack("fab", steps=10)(counting, x, y, threat)
        work[threat.eps] = counting.batches[1:]  # after the entry check: per iteration a linearisation and a check
    correct = int(robust_flags(model, x, y).sum())
    assert work[1e-3] == [correct] * 20  # nothing lies within a tiny ball: every sample runs all 10 iterations
    assert sum(work[0.3]) < sum(work[1e-3]) and work[0.3][-1] < correct


def test_fab_is_deterministic_and_uses_its_seed_for_restarts_only(cnn) -> None:
    model, x, y = cnn
    threat = ThreatModel("l2", 0.6)
    runs = [create_attack("fab", steps=5, restarts=2, seed=s)(model, x, y, threat) for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1])
    one = [create_attack("fab", steps=5, seed=s)(model, x, y, threat) for s in (0, 1)]
    assert torch.equal(one[0], one[1])  # restart 0 starts at the clean input: no random number drawn


@pytest.mark.parametrize(("name", "params", "field"), [
    ("fab", {"steps": 0}, "steps"), ("fab", {"restarts": 1.5}, "restarts"), ("fab", {"eta": 0.0}, "eta"),
    ("fab", {"alpha_max": 1.5}, "alpha_max"), ("fab", {"beta": float("nan")}, "beta"), ("fab-t", {"beta": 2.0}, "beta"),
    ("fab-t", {"n_target_classes": 0}, "n_target_classes"), ("square", {"restarts": 0}, "restarts"),
    ("square", {"p_init": 0.0}, "p_init"), ("square", {"n_queries": True}, "n_queries"),
])
def test_bad_parameters_are_refused_naming_the_field(name: str, params: dict, field: str) -> None:
    with pytest.raises(AttackConfigError, match=f"attack '{name}': {field} must"):
        create_attack(name, **params)


def test_an_adversarial_clean_input_and_eps_zero_are_returned_as_they_are(cnn) -> None:
    model, x, y = cnn
    wrong = robust_flags(model, x, y).logical_not()
    assert bool(wrong.any())  # the trained CNN misclassifies some of the samples
    for name in ("fab", "fab-t", "square"):
        params = {"n_queries": 20} if name == "square" else {"steps": 3}
        assert torch.equal(create_attack(name, **params)(model, x[wrong], y[wrong], ThreatModel("linf", 0.3)), x[wrong])
        assert torch.equal(create_attack(name, **params)(model, x, y, ThreatModel("l2", 0.0)), x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_box_projection_matches_the_reference(norm: str) -> None:
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(64, 50, generator=gen)
    points[:, :10] = points[:, :10].round()  # some coordinates on the box faces: no room on one side
    w = torch.randn(64, 50, generator=gen) * (torch.rand(64, 50, generator=gen) > 0.2)  # some w_i = 0
    b = (w * torch.rand(64, 50, generator=gen)).sum(dim=1) * torch.linspace(0.2, 3.0, 64)  # some out of reach
    ours = box_hyperplane_step(points, w, b, norm, (0.0, 1.0))
    expected = (projection_linf if norm == "linf" else projection_l2)(points, w, b)
    assert torch.allclose(ours, expected, atol=1e-5)
    inside = points + ours
    assert bool((inside >= -1e-6).all() and (inside <= 1 + 1e-6).all())
    reached = ((w * inside).sum(dim=1) - b).abs() < 1e-4
    assert 0 < int(reached.sum()) < 64  # reachable and unreachable hyperplanes both occur


# --- Square --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("norm", "eps", "loss", "restarts"), [("linf", 0.1, "margin", 1), ("l2", 0.5, "ce", 2)])
def test_square_returns_what_the_reference_returns(cnn, norm, eps, loss, restarts) -> None:
    """Same random stream, same arithmetic: bit-identical outputs (after the projection both get)."""
    model, x, y = cnn
    threat = ThreatModel(norm, eps)
    x_adv = create_attack("square", n_queries=150, loss=loss, restarts=restarts)(model, x, y, threat)
    ref_adv = reference(model, "Square", x, y, threat, n_queries=150, n_restarts=restarts, p_init=0.8, loss=loss,
                        resc_schedule=False)
    assert torch.equal(x_adv, threat.project(ref_adv, x))
    robust = robust_flags(model, x_adv, y)
    assert 0 < int(robust.sum()) < int(robust_flags(model, x, y).sum())
    assert bool(threat.contains(x_adv, x).all())


def test_square_skips_candidates_that_change_nothing(cnn) -> None:
    """A Linf candidate equal to the sample's best point is not sent to the model: fewer rows than the reference's
    one per still-robust sample and iteration, for the same output."""
    model, x, y = cnn
    threat = ThreatModel("linf", 0.05)
    ours, ref = CountingModel(model), CountingModel(model)
    x_adv = create_attack("square", n_queries=300)(ours, x, y, threat)
    ref_adv = reference(ref, "Square", x, y, threat, n_queries=300, n_restarts=1, p_init=0.8, resc_schedule=False)
    assert torch.equal(x_adv, threat.project(ref_adv, x))
    assert sum(ours.batches) < sum(ref.batches[1:-1])  # the reference also checks x and re-classifies its output


def test_square_is_deterministic_per_seed(cnn) -> None:
    model, x, y = cnn
    threat = ThreatModel("linf", 0.1)
    runs = [create_attack("square", n_queries=30, seed=s)(model, x, y, threat) for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_p_schedule() -> None:
    assert [p_at(i, 0.8, 5000, False) for i in (0, 10, 11, 50, 51, 8001)] == [0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 512]
    assert p_at(500, 0.8, 1000, True) == 0.8 / 128  # rescaled: iteration 500 of 1,000 counts as 5,000 of 10,000


def test_untargeted_fab_on_many_classes_says_once_what_it_costs(caplog) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 150))  # 150 classes (ImageNet: 1000)
    x = torch.rand(3, 1, 3, 4)
    y = model(x).argmax(1)
    threat = ThreatModel("linf", 0.1)
    fab = create_attack("fab", steps=2)
    with caplog.at_level(logging.WARNING, logger="attacks.fab"):
        fab(model, x, y, threat)
        fab(model, x, y, threat)  # the next batch of the same unit: said once
        create_attack("fab-t", steps=2)(model, x, y, threat)
        ten = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
        create_attack("fab", steps=2)(ten, x, ten(x).argmax(1), threat)  # 10 classes: nothing to say
    assert [r.getMessage() for r in caplog.records] == [
        "fab (untargeted) on 150 classes: every step takes the gradients of all 149 other classes (149 backward "
        "passes and a Jacobian of about 0.00682 MiB per input in float32); fab-t, AutoAttack's choice, takes 9 (one "
        "per target class)"]
