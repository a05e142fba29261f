"""Cascade bookkeeping and output verification of ``attacks.cascade`` on a stand-in model with scripted attacks."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor, nn

from attacks.base import AttackConfigError, ThreatModel
from attacks.cascade import (
    CLEAN_WRONG,
    NEVER_BROKEN,
    AttackContractError,
    run_verified,
    worst_case,
)

EPS = 0.1


class PairModel(nn.Module):
    """Two classes: class 0 iff ``x[:, 0] > x[:, 1]``; feature 2 carries a sample id the model ignores."""

    def forward(self, x: Tensor) -> Tensor:
        d = 10.0 * (x[:, 0] - x[:, 1])
        return torch.stack([d, -d], dim=1)


def make_data(n: int = 8) -> tuple[Tensor, Tensor]:
    ids = torch.arange(n, dtype=torch.float32) / 100.0
    x = torch.stack([torch.full((n,), 0.55), torch.full((n,), 0.45), ids], dim=1)
    y = torch.zeros(n, dtype=torch.long)
    if n > 5:
        y[5] = 1  # sample 5 is misclassified without any attack
    return x, y


class Scripted:
    """Breaks the samples whose id is in ``targets`` (moves both features by eps, inside the ball); logs calls."""

    def __init__(self, name: str, targets: set[int]) -> None:
        self.name = name
        self.targets = targets
        self.seen: list[int] = []

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        ids = [int(round(v * 100)) for v in x[:, 2].tolist()]
        self.seen += ids
        hit = torch.tensor([i in self.targets for i in ids])
        out = x.clone()
        out[hit, 0] -= threat.eps
        out[hit, 1] += threat.eps
        return out


def test_cascade_runs_each_attack_only_on_survivors() -> None:
    x, y = make_data()
    a, b, c = Scripted("a", {0, 1}), Scripted("b", {1, 2, 3}), Scripted("c", {4})
    calls: list[int] = []
    res = worst_case(PairModel(), x, y, ThreatModel("linf", EPS), [a, b, c], "cascade", batch_size=3,
                     on_outcome=lambda i, outcome, flags: calls.append(i))
    assert sorted(a.seen) == [0, 1, 2, 3, 4, 6, 7]  # every clean-correct sample
    assert sorted(b.seen) == [2, 3, 4, 6, 7]  # a's survivors only
    assert sorted(c.seen) == [4, 6, 7]
    assert calls == [0, 1, 2]
    assert res.flags.dtype == torch.int8
    assert res.flags[0].tolist() == [0, 0, 1, 1, 1, -1, 1, 1]
    assert res.flags[1].tolist() == [-1, -1, 0, 0, 1, -1, 1, 1]
    assert res.flags[2].tolist() == [-1, -1, -1, -1, 0, -1, 1, 1]
    assert res.robust.tolist() == [False] * 6 + [True, True]
    assert res.first_broken_by.tolist() == [0, 0, 1, 1, 2, CLEAN_WRONG, NEVER_BROKEN, NEVER_BROKEN]
    assert res.robust_accuracy == pytest.approx(2 / 8)


def test_independent_runs_every_attack_on_every_clean_correct_sample() -> None:
    x, y = make_data()
    a, b = Scripted("a", {0, 1}), Scripted("b", {1, 2, 3})
    res = worst_case(PairModel(), x, y, ThreatModel("linf", EPS), [a, b], "independent")
    assert sorted(b.seen) == [0, 1, 2, 3, 4, 6, 7]
    assert res.flags[1].tolist() == [1, 0, 0, 0, 1, -1, 1, 1]
    assert res.first_broken_by.tolist()[:5] == [0, 0, 1, 1, NEVER_BROKEN]
    assert res.robust.tolist() == [False, False, False, False, True, False, True, True]


def test_completed_attacks_are_not_rerun_and_enter_the_cascade() -> None:
    x, y = make_data()
    full = worst_case(PairModel(), x, y, ThreatModel("linf", EPS), [Scripted("a", {0, 1}), Scripted("b", {2})])
    a, b = Scripted("a", {0, 1}), Scripted("b", {2})
    resumed = worst_case(PairModel(), x, y, ThreatModel("linf", EPS), [a, b], completed={0: full.flags[0]})
    assert a.seen == []
    assert sorted(b.seen) == [2, 3, 4, 6, 7]
    assert resumed.outcomes[0] is None
    assert torch.equal(resumed.flags, full.flags)
    assert torch.equal(resumed.first_broken_by, full.first_broken_by)


class Overshoot:
    """Returns inputs far outside the eps ball: raw output is adversarial, the projected one is not."""

    name = "overshoot"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        out = x.clone()
        out[:, 1] += 0.5  # x1 = 0.95 > x0 would flip the class; within eps it only reaches 0.5 < 0.55
        return out


def test_out_of_ball_outputs_are_projected_counted_and_reclassified(caplog: pytest.LogCaptureFixture) -> None:
    x, y = make_data()
    threat = ThreatModel("linf", 0.05)
    with caplog.at_level(logging.WARNING, logger="attacks.cascade"):
        outcome = run_verified(PairModel(), Overshoot(), x, y, threat, batch_size=4)
    assert outcome.n_violations == 8
    assert outcome.max_violation == pytest.approx(0.45, abs=1e-6)
    assert bool(threat.contains(outcome.x_adv, x).all())
    assert torch.allclose(outcome.x_adv[:, 1], x[:, 1] + 0.05)
    # re-classified on the projected inputs: nothing but the clean-wrong sample 5 is misclassified
    assert outcome.success.tolist() == [False] * 5 + [True] + [False, False]
    # margins from the same logits: 10 x (0.55 - 0.5) = 0.5 for class 0, so -1 where y = 0 and +1 for sample 5
    assert outcome.margin.tolist() == pytest.approx([-1.0] * 5 + [1.0] + [-1.0] * 2, abs=1e-5)
    assert "8 of 8 outputs lay outside the Linf 0.05 ball or the bounds [0, 1]" in caplog.text
    assert "overshoot" in caplog.text


def test_outputs_in_the_ball_but_out_of_bounds_are_reported_as_such(caplog: pytest.LogCaptureFixture) -> None:
    """x + eps * sign(g) without a clamp (the README's plug-in example before it clamped): inside the eps ball,
    outside [0, 1]. The warning said 'outside linf eps=0.1 (max excess 0.0996)', naming the ball alone."""
    x, y = make_data(4)
    x[:, 0] = 0.99

    def unclamped(model: nn.Module, xb: Tensor, yb: Tensor, threat: ThreatModel) -> Tensor:
        return xb + threat.eps

    with caplog.at_level(logging.WARNING, logger="attacks.cascade"):
        outcome = run_verified(PairModel(), unclamped, x, y, ThreatModel("linf", EPS))
    assert outcome.n_violations == 4 and outcome.max_violation == pytest.approx(0.09, abs=1e-6)
    assert "4 of 4 outputs lay outside the Linf 0.1 ball or the bounds [0, 1] (max excess 0.09)" in caplog.text


def test_non_finite_outputs_count_as_infinite_violations() -> None:
    x, y = make_data(4)

    def nan_attack(model: nn.Module, xb: Tensor, yb: Tensor, threat: ThreatModel) -> Tensor:
        out = xb.clone()
        out[0, 0] = float("nan")
        return out

    outcome = run_verified(PairModel(), nan_attack, x, y, ThreatModel("linf", EPS))
    assert outcome.violation[0].item() == float("inf")
    assert outcome.n_violations == 1
    assert torch.isfinite(outcome.x_adv).all()
    assert torch.equal(outcome.x_adv[0], x[0])


def test_inactive_samples_are_not_attacked_and_keep_clean_inputs() -> None:
    x, y = make_data()
    a = Scripted("a", set(range(8)))
    active = torch.tensor([True, False] * 4)
    outcome = run_verified(PairModel(), a, x, y, ThreatModel("linf", EPS), active=active)
    assert sorted(a.seen) == [0, 2, 4, 6]
    assert outcome.pred[~active].tolist() == [-1] * 4
    # the runner's margin max_{j != y} z_j - z_y on what it re-classified; NaN where not attacked
    assert torch.isnan(outcome.margin[~active]).all() and outcome.margin.dtype == torch.float64
    assert outcome.margin[active].tolist() == pytest.approx([2.0] * 4)  # broken: logits 10 x (0.45 - 0.55) = -1, 1
    assert bool(((outcome.margin[active] > 0) == outcome.success[active]).all())
    assert outcome.margins() == pytest.approx([2.0, None] * 4)  # for a record: None where not attacked
    assert torch.equal(outcome.x_adv[~active], x[~active])
    assert outcome.flags().tolist() == [0, -1] * 4


def test_contract_violations_raise() -> None:
    x, y = make_data(4)
    with pytest.raises(AttackContractError, match="shape"):
        run_verified(PairModel(), lambda m, xb, yb, t: xb[:, :2], x, y, ThreatModel("linf", EPS))
    with pytest.raises(AttackContractError, match="float64"):
        run_verified(PairModel(), lambda m, xb, yb, t: xb.double(), x, y, ThreatModel("linf", EPS))
    with pytest.raises(AttackConfigError, match="mode"):
        worst_case(PairModel(), x, y, ThreatModel("linf", EPS), [], mode="union")  # type: ignore[arg-type]


def test_restores_training_flags() -> None:
    model = nn.Sequential(PairModel())
    model.train()
    model[0].eval()
    x, y = make_data(4)
    seen_training: list[bool] = []

    def spy(m: nn.Module, xb: Tensor, yb: Tensor, threat: ThreatModel) -> Tensor:
        seen_training.append(any(mod.training for mod in m.modules()))
        return xb

    run_verified(model, spy, x, y, ThreatModel("linf", EPS))
    assert seen_training == [False]
    assert model.training and not model[0].training


def test_attack_not_called_without_active_samples() -> None:
    x, y = make_data(4)
    a = Scripted("a", {0})
    outcome = run_verified(PairModel(), a, x, y, ThreatModel("linf", EPS), active=torch.zeros(4, dtype=torch.bool))
    assert a.seen == [] and not outcome.success.any() and outcome.queries is None


def test_keep_inputs_false_holds_one_attacks_inputs_at_a_time() -> None:
    """Each outcome's ``[N, ...]`` adversarial inputs are freed once ``on_outcome`` has seen them: the runner used to
    hold every attack's at a threat point until the last one finished (10,000 CIFAR-sized inputs: 123 MB each)."""
    import gc
    import weakref

    x, y = make_data()
    alive: list[weakref.ref] = []
    seen_alive: list[int] = []

    class Probe(Scripted):
        def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
            gc.collect()
            seen_alive.append(sum(ref() is not None for ref in alive))
            return super().__call__(model, x, y, threat)

    attacks = [Probe("a", {0}), Probe("b", {1}), Probe("c", {2})]
    full = worst_case(PairModel(), x, y, ThreatModel("linf", EPS), attacks, "independent", batch_size=4)
    lean = worst_case(PairModel(), x, y, ThreatModel("linf", EPS), attacks, "independent", batch_size=4,
                      on_outcome=lambda i, out, flags: alive.append(weakref.ref(out.x_adv)), keep_inputs=False)
    assert seen_alive[len(attacks) * 2:] == [0, 0, 0, 0, 0, 0]  # batches of the lean run: none held
    assert torch.equal(lean.flags, full.flags) and torch.equal(lean.first_broken_by, full.first_broken_by)
    assert all(o.x_adv.shape == (0, *x.shape[1:]) for o in lean.outcomes)
    assert all(torch.equal(a.pred, b.pred) for a, b in zip(full.outcomes, lean.outcomes))
