"""BPDA's temperature stages against independent computations (mutation round on attacks/bpda.py,
attacks/bpda_temperature.py, attacks/bpda_protocol.py): the best point over stages, the projection, the rows each
stage attacks, the per-step temperature draws per stage seed, the restore of layers and hooks, the configuration."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.base import NORMS, REGISTRY, AttackConfigError, AttackInfo, margin_loss, seeded_generator
from attacks.bpda import BPDA, SURROGATES, _plan_identity
from attacks.bpda_stages import closest_to_breaking
from attacks.bpda_protocol import set_temperature, surrogate_backward
from attacks.bpda_wrap import LayerTarget
from bpda_models import D, batch, kwta_mlp, layer_settings


class FixedStage:
    """A fake inner attack: returns ``x + scale · direction[rows]`` for the rows it is given (found by matching the
    clean rows), and records how many rows each call had."""

    def __init__(self, x: Tensor, direction: Tensor, scale: float) -> None:
        self.x, self.direction, self.scale, self.rows = x, direction, scale, []

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        self.rows.append(x.shape[0])
        index = (x[:, None, :] == self.x[None]).all(-1).float().argmax(1)
        return x + self.scale * self.direction[index]


def _margin(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        logits = model(x)
    top_other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return top_other - logits.gather(1, y[:, None]).squeeze(1)


def test_the_most_adversarial_projected_point_over_the_stages_is_kept() -> None:
    """Two fake stages that break nothing, returning points outside the ball: per sample the kept point is the
    projected one with the largest margin among clean / stage 1 / stage 2 (strictly better replaces), computed
    here by hand. Before a mutant kept the last stage's point or skipped the projection."""
    model = kwta_mlp()
    x, y = batch(model, n=32)
    eps = 1e-3
    threat = ThreatModel("linf", eps)
    gen = torch.Generator().manual_seed(7)
    d1, d2 = torch.randn(32, D, generator=gen), torch.randn(32, D, generator=gen)
    attack = BPDA("smooth", "pgd", {"steps": 2}, temperature_schedule=[1.0, 0.1])
    attack.stages = [FixedStage(x, d1, 3 * eps), FixedStage(x, d2, 3 * eps)]
    x_adv = attack(model, x, y, threat)
    points = [x, (x + (3 * eps * d1).clamp(-eps, eps)).clamp(0, 1), (x + (3 * eps * d2).clamp(-eps, eps)).clamp(0, 1)]
    margins = torch.stack([_margin(model, p, y) for p in points])  # [3, N]
    assert bool((margins <= 0).all()), "pick a setting where nothing breaks: every stage attacks every row"
    assert [s.rows for s in attack.stages] == [[32], [32]]
    expected = x.clone()
    best = margins[0].clone()
    for point, margin in zip(points[1:], margins[1:]):
        better = margin > best
        expected[better], best[better] = point[better], margin[better]
    assert 0 < int((best == margins[1]).sum()) < 32 and int((best == margins[2]).sum()) > 0, "a mix of winners"
    assert torch.equal(x_adv, expected)


def test_an_equally_adversarial_later_point_does_not_replace_the_kept_one() -> None:
    """A model whose output ignores the input: every stage's point has the clean margin, so the clean ``x`` stays
    (the first of equally good points is kept)."""
    model = kwta_mlp()
    with torch.no_grad():
        model[4].weight.zero_()
    x, y = batch(model, n=8)
    attack = BPDA("smooth", "pgd", {"steps": 2}, temperature_schedule=[1.0, 0.1])
    direction = torch.ones(8, D)
    attack.stages = [FixedStage(x, direction, 1e-3), FixedStage(x, -direction, 1e-3)]
    assert torch.equal(attack(model, x, y, ThreatModel("linf", 1e-2)), x)


def test_a_stage_after_every_sample_broke_does_not_run() -> None:
    model = kwta_mlp()
    x, y = batch(model, n=12)
    corners = (torch.rand(5000, D, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    with torch.no_grad():
        other = corners[(model(corners).argmax(1) != y[0]).nonzero()[0, 0]].expand_as(x)  # a corner of another class
    assert bool((y == y[0]).all())
    attack = BPDA("smooth", "pgd", {"steps": 2}, temperature_schedule=[1.0, 0.1])
    attack.stages = [FixedStage(x, other - x, 1.0), FixedStage(x, torch.zeros_like(x), 1.0)]
    x_adv = attack(model, x, y, ThreatModel("linf", 1.0))
    assert bool((margin_loss(model(x_adv), y) > 0).all())
    assert attack.stages[1].rows == [], "nothing left to attack: stage 2 must not be called (even on 0 rows)"


def test_a_tied_sample_counts_as_still_robust() -> None:
    """Margin exactly 0 (a tie the argmax resolves to the label): still robust, so the first stage attacks it."""
    model = kwta_mlp()
    with torch.no_grad():
        model[4].weight[1] = model[4].weight[0]
        model[4].bias[1] = model[4].bias[0]
        model[4].weight[2] = model[4].weight[0]
        model[4].bias[2] = model[4].bias[0] - 1.0
    x, _ = batch(model, n=6)
    y = torch.zeros(6, dtype=torch.long)
    assert bool((margin_loss(model(x), y) == 0).all()) and bool((model(x).argmax(1) == y).all())
    attack = BPDA("smooth", "pgd", {"steps": 2}, temperature_schedule=[1.0, 0.1])
    attack.stages = [FixedStage(x, torch.zeros_like(x), 1.0), FixedStage(x, torch.zeros_like(x), 1.0)]
    attack(model, x, y, ThreatModel("linf", 0.1))
    assert [s.rows for s in attack.stages] == [[6], [6]]


def test_a_single_stage_is_the_inner_attack_on_the_switched_model() -> None:
    """One stage: exactly the inner attack's output under the smooth surrogate (no best-of with the clean point)."""
    model = kwta_mlp()
    x, y = batch(model)
    threat = ThreatModel("linf", 0.05)
    x_adv = create_attack("bpda", surrogate="smooth", temperature=0.3, inner="pgd",
                          inner_params={"steps": 3, "random_start": True}, seed=4)(model, x, y, threat)
    with surrogate_backward(model, "smooth", 0.3):
        expected = create_attack("pgd", steps=3, random_start=True, seed=4)(model, x, y, threat)
    assert torch.equal(x_adv, expected)


def test_each_stage_draws_its_temperatures_from_its_own_seed() -> None:
    """Stage ``i``'s log-uniform draws come from seed ``seed + i``: computed here with the seeded generator."""
    model = kwta_mlp()
    seen: list[float] = []
    layer = model[3]
    layer.register_forward_pre_hook(lambda m, a: seen.append(m.temperature) if torch.is_grad_enabled() else None)
    x, y = batch(model)
    lo, hi, seed = 0.03, 0.1, 5
    attack = create_attack("bpda", surrogate="smooth", inner="apgd-ce", seed=seed, stage_steps=[3, 3],
                           temperature_schedule=[{"log_uniform": [lo, hi]}, {"log_uniform": [lo, hi]}])
    attack(model, x, y, ThreatModel("linf", 1e-4))  # breaks nothing: 4 gradient evaluations per stage
    expected = []
    for stage in range(2):
        gen = seeded_generator(seed + stage, "cpu")
        expected += [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * float(torch.rand((), generator=gen)))
                     for _ in range(4)]
    assert seen == pytest.approx(expected, rel=1e-12) and seen[:4] != seen[4:]
    assert layer_settings(model) == {"1": ("exact", 1.0), "3": ("exact", 1.0)}
    assert not model._forward_pre_hooks, "BPDA's per-step hook must be gone"


class RaiseOnGradient(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("boom")
        return x


@pytest.mark.parametrize("schedule", [[[1.0, 0.5]], [0.3, {"log_uniform": [0.03, 0.1]}]])
def test_the_per_step_hook_is_removed_when_the_inner_attack_raises(schedule: list) -> None:
    model = kwta_mlp(extra=RaiseOnGradient())
    x, y = batch(model)
    attack = create_attack("bpda", surrogate="smooth", inner="pgd", temperature_schedule=schedule,
                           stage_steps=[2] * len(schedule))
    with pytest.raises(RuntimeError, match="boom"):
        attack(model, x, y, ThreatModel("linf", 0.1))
    assert not model._forward_pre_hooks
    assert layer_settings(model) == {"1": ("exact", 1.0), "3": ("exact", 1.0)}


def test_closest_to_breaking_returns_indices_ascending_and_breaks_ties_by_index() -> None:
    todo = torch.arange(10, 16)
    margin = torch.tensor([-3.0, -2.0, -1.0, -0.5, -0.2, -0.1])  # the largest margins sit at the highest indices
    assert closest_to_breaking(todo, margin, 0.5).tolist() == [13, 14, 15]
    many = torch.arange(2000)
    assert closest_to_breaking(many, torch.zeros(2000), 0.1).tolist() == list(range(200))


@pytest.mark.parametrize("schedule", [[0.0, 0.1], [[0.1, 0.0]], [{"log_uniform": [0.0, 0.1]}],
                                      [{"log_uniform": [0.1, 0.1]}], [{"log_uniform": [0.01, 0.05, 0.1]}],
                                      [{"log_uniform": [0.03, 0.1], "cycle": [0.1]}]])
def test_bad_temperature_entries_are_a_clear_error(schedule: list) -> None:
    with pytest.raises(AttackConfigError, match="temperature_schedule"):
        create_attack("bpda", surrogate="smooth", temperature_schedule=schedule)


def test_a_zero_step_total_split_over_stages_is_a_clear_error() -> None:
    with pytest.raises(AttackConfigError, match="inner_params.steps: must be an integer >= 1"):
        create_attack("bpda", surrogate="smooth", inner_params={"steps": 0}, temperature_schedule=[1.0, 0.1])


def test_given_layer_targets_are_used_as_given_and_streams_are_distinct() -> None:
    targets = {"1": LayerTarget("gate", grouping="dense"), "3": LayerTarget("piecewise-constant")}
    assert BPDA("identity", "pgd", layers=targets).targets(kwta_mlp()) == targets
    draw = [float(torch.rand((), generator=BPDA(seed=s).generator(torch.device("cpu"), stream)))
            for s, stream in ((0, 2), (1, 1), (0, 1))]
    assert len(set(draw)) == 3


def test_a_mapping_switches_only_the_named_layers_and_restores_them() -> None:
    """``surrogate_backward`` with ``{name: spec}``: yields only the named layers, so a temperature change in the
    block cannot touch (and leave changed) the others; ``set_temperature`` keeps each layer's backward."""
    model = kwta_mlp()
    model[3].set_backward("smooth", 0.7)
    with surrogate_backward(model, {"1": "identity"}, 2.0) as switched:
        assert list(switched) == ["1"]
        set_temperature(switched, 0.5)
        assert layer_settings(model) == {"1": ("identity", 0.5), "3": ("smooth", 0.7)}
    assert layer_settings(model) == {"1": ("exact", 1.0), "3": ("smooth", 0.7)}
    with pytest.raises(ValueError, match="no BPDA-capable layer named 'nope'"):
        with surrogate_backward(model, {"1": "identity", "nope": "identity"}):
            pass
    assert layer_settings(model) == {"1": ("exact", 1.0), "3": ("smooth", 0.7)}


def test_a_one_temperature_list_is_recorded_as_that_temperature() -> None:
    attack = BPDA("smooth", "pgd", {"steps": 4}, temperature_schedule=[[0.1], [0.3, 0.1]])
    assert attack.attack_settings()["temperatures"] == [0.1, [0.3, 0.1]]


def test_a_plug_in_surrogate_records_every_setting_bpda_has() -> None:
    with SURROGATES.temporarily("plug-in-test", _plan_identity):
        settings = BPDA("plug-in-test", "pgd", {"steps": 2}, temperature=0.4).attack_settings()
    assert settings["temperatures"] == [0.4] and "fit" in settings and "distill" in settings


def test_a_tiny_kept_fraction_still_attacks_one_sample() -> None:
    assert closest_to_breaking(torch.arange(5), torch.tensor([-0.5, -0.1, -2.0, -0.1, -0.3]), 1e-12).tolist() == [1]


def test_a_single_log_uniform_stage_draws_from_the_attack_seed_and_large_temperatures_are_fine() -> None:
    model = kwta_mlp()
    seen: list[float] = []
    model[3].register_forward_pre_hook(lambda m, a: seen.append(m.temperature) if torch.is_grad_enabled() else None)
    x, y = batch(model)
    create_attack("bpda", surrogate="smooth", inner="apgd-ce", seed=3, stage_steps=[2],
                  temperature_schedule=[{"log_uniform": [0.03, 0.1]}])(model, x, y, ThreatModel("linf", 1e-4))
    gen = seeded_generator(3, "cpu")
    expected = [math.exp(math.log(0.03) + math.log(0.1 / 0.03) * float(torch.rand((), generator=gen)))
                for _ in range(3)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert BPDA(temperature_schedule=[1e3, 1e-3]).temperatures == [1000.0, 0.001]


class TrainingSpy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(self.training)
        return x


def test_the_model_is_attacked_in_eval_mode_and_left_in_train_mode() -> None:
    spy = TrainingSpy()
    model = kwta_mlp(extra=spy)
    x, y = batch(model)
    model.train()
    create_attack("bpda", surrogate="smooth", inner="pgd", temperature_schedule=[1.0, 0.1],
                  inner_params={"steps": 2})(model, x, y, ThreatModel("linf", 1e-4))
    assert spy.seen and not any(spy.seen)
    assert all(m.training for m in model.modules())


class PlainInner:
    """A plug-in inner attack that is neither a dataclass nor self-describing: its settings are what it was given."""

    def __init__(self, steps: int = 10, step: float = 0.1, seed: int = 0) -> None:
        self.steps, self.step, self.seed = steps, step, seed

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        return x.clone()


def test_a_plain_inner_attack_records_each_stage_s_own_parameters() -> None:
    with REGISTRY.temporarily("plain-inner", AttackInfo("plain-inner", PlainInner, NORMS, "white-box")):
        attack = BPDA("smooth", "plain-inner", {"step": 0.2}, temperature_schedule=[1.0, 0.1], stage_steps=[2, 5],
                      stage_params=[{}, {"step": 0.5}])
        inner = attack.attack_settings()["inner"]
    assert [(s["steps"], s["step"]) for s in inner] == [(2, 0.2), (5, 0.5)]
