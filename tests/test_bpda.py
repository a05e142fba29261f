"""BPDA wrapper (attacks/bpda.py) on tiny kWTA MLPs: configuration, temperature stages, switching and restoring the
layers, stages on the samples closest to breaking (the fitted surrogates: tests/test_bpda_surrogates.py)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.base import AttackConfigError, attack_info, margin_loss
from attacks.bpda import BPDA
from attacks.bpda_stages import closest_to_breaking, split_steps
from attacks.surrogates import GroupGateSurrogate
from bpda_models import batch, kwta_mlp, layer_settings, relu_mlp


class RaiseOnGradient(nn.Module):
    """Identity, except that it raises as soon as a gradient is requested (i.e. inside the inner attack)."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("boom: inner attack failed")
        return x


class BackwardSpy(nn.Module):
    """Identity that records, for each forward with gradients, the backward/temperature of ``layer`` and the rows."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.__dict__["layer"] = layer  # not a submodule
        self.seen: list[tuple[object, float, int]] = []

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.seen.append((self.layer.backward, self.layer.temperature, x.shape[0]))
        return x




# --- construction and registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("surrogate", ["identity", "smooth", "learned", "model"])
def test_name_reads_well(surrogate: str) -> None:
    attack = create_attack("bpda", surrogate=surrogate, inner="pgd", inner_params={"steps": 3})
    assert attack.name == f"bpda-{surrogate}+pgd"
    assert attack_info("bpda").kind == "bpda"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"surrogate": "sigmoid"}, "surrogate"),
        ({"surrogate": "identity", "temperature_schedule": [1.0, 0.5]}, "temperature_schedule"),
        ({"surrogate": "smooth", "temperature_schedule": []}, "temperature_schedule"),
        ({"surrogate": "smooth", "temperature_schedule": [1.0, -0.5]}, "temperature_schedule"),
        ({"surrogate": "smooth", "temperature": 0.0}, "temperature"),
        ({"inner": "no-such-attack"}, "no-such-attack"),
        ({"inner": "transfer"}, "inner"),
        # gradient-free: before, it ran unchanged and the record said BPDA acted on every gate (no gates flag)
        ({"inner": "gradient-estimation"}, "inner: 'gradient-estimation' estimates gradients from the model's outputs"),
        ({"inner": "pgd", "inner_params": {"steps": 0}}, "steps"),
        ({"surrogate": "learned", "fit_steps": -1}, "fit_steps"),
        ({"surrogate": "model", "distill_lr": 0.0}, "distill_lr"),
        ({"temperature_schedule": [0.1, 0.03], "stage_steps": [10]}, "stage_steps"),
        ({"temperature_schedule": [0.1, 0.03], "stage_steps": [10, 0]}, "stage_steps"),
        ({"temperature_schedule": [0.1, 0.03], "stage_steps": "10,20"}, "stage_steps"),
        ({"temperature_schedule": [0.1, 0.03], "stage_steps": [10, 2.5]}, "stage_steps"),
        ({"temperature_schedule": [0.1, 0.03], "stage_steps": [5, 5], "inner_params": {"steps": 10}}, "stage_steps"),
        ({"inner": "fgsm", "stage_steps": [5]}, "stage_steps"),
        ({"temperature_schedule": "0.1"}, "temperature_schedule"),
        ({"temperature_schedule": [[0.1, -0.03]]}, "temperature_schedule"),
        ({"temperature_schedule": [[]]}, "temperature_schedule"),
        ({"temperature_schedule": [{"log_uniform": [0.1, 0.03]}]}, "temperature_schedule"),
        ({"temperature_schedule": [{"log_uniform": [0.03]}]}, "temperature_schedule"),
        ({"temperature_schedule": [{"uniform": [0.03, 0.1]}]}, "temperature_schedule"),
        ({"temperature_schedule": [True]}, "temperature_schedule"),
        ({"temperature_schedule": [{"log_uniform": [0.02, float("inf")]}]}, "temperature_schedule"),  # accepted before
        ({"temperature_schedule": [0.1, float("inf")]}, "temperature_schedule"),  # accepted before
        ({"temperature_schedule": [[0.1, float("inf")]]}, "temperature_schedule"),  # accepted before
        ({"surrogate": "smooth", "temperature": float("inf")}, "temperature: must be a finite number > 0"),
    ],
)
def test_bad_configuration_is_a_clear_error(params: dict, field: str) -> None:
    with pytest.raises(AttackConfigError, match=field):
        create_attack("bpda", **params)


def test_steps_split_over_temperature_stages() -> None:
    assert split_steps(10, 3) == [4, 3, 3]
    assert split_steps(9, 3) == [3, 3, 3]
    assert split_steps(2, 3) == [1, 1, 1]
    attack = BPDA("smooth", "pgd", {"steps": 10}, temperature_schedule=[3.0, 1.0, 0.3], seed=5)
    assert [stage.steps for stage in attack.stages] == [4, 3, 3]
    assert [stage.seed for stage in attack.stages] == [5, 6, 7]
    single = BPDA("smooth", "pgd", {"steps": 10, "seed": 2})
    assert [(s.steps, s.seed) for s in single.stages] == [(10, 2)]


def test_stage_steps_give_each_stage_its_own_budget() -> None:
    attack = BPDA("smooth", "apgd-ce", {}, temperature_schedule=[0.1, 0.03], stage_steps=[7, 40], seed=3)
    assert [(stage.steps, stage.seed) for stage in attack.stages] == [(7, 3), (40, 4)]


def test_stage_params_reach_each_stage_s_inner_attack() -> None:
    """``stage_params``: per-stage inner parameters on top of ``inner_params`` (APGD's first step for the long
    stages only, as the quickstart sets it); steps and seeds stay BPDA's."""
    attack = BPDA("smooth", "apgd-ce", {"rho": 0.5}, temperature_schedule=[0.1, 0.05, 0.03], stage_steps=[7, 40, 90],
                  stage_params=[{}, {"initial_step": 0.5}, {"initial_step": 0.25, "rho": 0.9}], seed=3)
    assert [(s.steps, s.seed, s.initial_step, s.rho) for s in attack.stages] == [
        (7, 3, 2.0, 0.5), (40, 4, 0.5, 0.5), (90, 5, 0.25, 0.9)]


@pytest.mark.parametrize(
    ("stage_params", "match"),
    [([{}], "stage_params: 1 entries for 2"), ([{}, "initial_step=0.5"], "mapping"), ({"initial_step": 0.5}, "list"),
     ([{}, {"steps": 5}], "use stage_steps"), ([{"seed": 1}, {}], "'seed' is set per stage"),
     ([{}, {"initial_step": 0}], "initial_step"),
     ([{}, {"stpes": 3}], "stage_params\\[1\\]: attack 'apgd-ce': unknown parameter 'stpes'")],
)
def test_bad_stage_params_is_a_clear_error(stage_params: object, match: str) -> None:
    with pytest.raises(AttackConfigError, match=match):
        create_attack("bpda", surrogate="smooth", inner="apgd-ce", temperature_schedule=[0.1, 0.05],
                      stage_steps=[2, 2], stage_params=stage_params)


def test_on_no_layer_the_stages_collapse_to_the_first(caplog: pytest.LogCaptureFixture) -> None:
    """Temperatures act on nothing on a model without BPDA layers: later stages would only repeat the attack."""
    model = relu_mlp()
    x, y = batch(model)
    threat = ThreatModel("linf", 1e-4)  # breaks nothing: every stage that runs attacks every row
    calls: list[int] = []

    class Recorded:
        def __init__(self, stage):
            self.stage = stage

        def __call__(self, *args):
            calls.append(self.stage.steps)
            return self.stage(*args)

    attack = BPDA("smooth", "pgd", {}, temperature_schedule=[0.1, 0.03], stage_steps=[3, 9])
    attack.stages = [Recorded(stage) for stage in attack.stages]
    with caplog.at_level(logging.INFO, logger="attacks.bpda"):
        x_adv = attack(model, x, y, threat)
    assert calls == [3], "only the first stage runs when BPDA acts on no layer"
    assert attack.last_switched_layers == []
    assert bool(threat.contains(x_adv, x).all())
    assert "once (the first stage's budget)" in caplog.text
    kwta = kwta_mlp()
    calls.clear()
    attack.stages = [Recorded(stage.stage) for stage in attack.stages]
    attack(kwta, *batch(kwta), threat)
    assert calls == [3, 9], "with layers to act on, every stage runs"


# --- switching and restoring -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"surrogate": "identity"},
        {"surrogate": "smooth", "temperature": 2.0},
        {"surrogate": "smooth", "temperature_schedule": [3.0, 1.0]},
        {"surrogate": "learned", "fit_steps": 5},
    ],
    ids=["identity", "smooth", "smooth-schedule", "learned"],
)
def test_layers_restored_when_inner_attack_raises(params: dict) -> None:
    model = kwta_mlp(extra=RaiseOnGradient())
    model[1].set_backward("identity", 0.7)  # non-default settings that must come back exactly
    model[3].set_backward("exact", 1.9)
    before = layer_settings(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    x, y = batch(model.eval())
    model.train()
    attack = create_attack("bpda", inner="pgd", inner_params={"steps": 3}, **params)
    with pytest.raises(RuntimeError, match="boom"):
        attack(model, x, y, ThreatModel("linf", 0.1))
    assert layer_settings(model) == before
    assert all(m.training for m in model.modules()), "training flags not restored"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_layers_switched_during_attack_and_schedule_sharpens() -> None:
    model = kwta_mlp()
    spy = BackwardSpy(model[3])
    model.insert(4, spy)
    x, y = batch(model)
    attack = create_attack(
        "bpda", surrogate="smooth", inner="pgd", inner_params={"steps": 6}, temperature_schedule=[4.0, 1.0, 0.25]
    )
    attack(model, x, y, ThreatModel("linf", 1e-4))  # too small to break anything: every stage runs on all rows
    assert {b for b, _, _ in spy.seen} == {"smooth"}
    temperatures = [t for _, t, _ in spy.seen]
    assert temperatures == sorted(temperatures, reverse=True) and set(temperatures) == {4.0, 1.0, 0.25}
    assert attack.last_switched_layers == ["1", "3"]
    assert layer_settings(model) == {"1": ("exact", 1.0), "3": ("exact", 1.0)}


def test_temperature_changes_per_gradient_step_inside_a_stage() -> None:
    """A list entry cycles per gradient evaluation, a log_uniform entry draws (seeded) per evaluation."""
    model = kwta_mlp()
    spy = BackwardSpy(model[3])
    model.insert(4, spy)
    x, y = batch(model)
    threat = ThreatModel("linf", 1e-4)  # breaks nothing: every step runs on every row
    cycled = create_attack("bpda", surrogate="smooth", inner="apgd-ce", temperature_schedule=[4.0, [1.0, 0.25]],
                           stage_steps=[3, 5])
    cycled(model, x, y, threat)
    assert [t for _, t, _ in spy.seen] == [4.0] * 4 + [1.0, 0.25] * 3  # a start and one per step, per stage
    assert layer_settings(model) == {"1": ("exact", 1.0), "3": ("exact", 1.0)}
    assert not model._forward_pre_hooks, "the per-step hook must be removed"
    drawn = []
    for _ in range(2):
        spy.seen.clear()
        drawing = create_attack("bpda", surrogate="smooth", inner="apgd-ce",
                                temperature_schedule=[{"log_uniform": [0.03, 0.1]}], stage_steps=[8], seed=4)
        drawing(model, x, y, threat)
        drawn.append([t for _, t, _ in spy.seen])
    assert drawn[0] == drawn[1], "same seed, same draws"
    assert len(drawn[0]) == 9 and len(set(drawn[0])) == 9 and all(0.03 <= t <= 0.1 for t in drawn[0])


def test_later_stages_attack_only_still_robust_samples() -> None:
    model = kwta_mlp()
    spy = BackwardSpy(model[3])
    model.insert(4, spy)
    x, y = batch(model, n=40)
    threat = ThreatModel("linf", 1.0)  # the untrained net has large margins: let the attack use the whole box
    staged = create_attack(
        "bpda", surrogate="smooth", inner="pgd", inner_params={"steps": 20}, temperature_schedule=[2.0, 0.5]
    )
    x_adv = staged(model, x, y, threat)
    first_rows: dict[float, int] = {}
    for _, temperature, rows in spy.seen:
        first_rows.setdefault(temperature, rows)
    # stage 1 is exactly BPDA-smooth at T=2 with half the steps and the same seed
    x_stage1 = create_attack("bpda", surrogate="smooth", temperature=2.0, inner="pgd", inner_params={"steps": 10})(
        model, x, y, threat
    )
    with torch.no_grad():
        broken_stage1 = model(x_stage1).argmax(1) != y
        broken = model(x_adv).argmax(1) != y
    assert bool(threat.contains(x_adv, x).all())
    assert 0 < int(broken_stage1.sum()) < len(x), "pick a setting where stage 1 breaks some but not all samples"
    assert first_rows[2.0] == len(x)
    assert first_rows[0.5] == int((~broken_stage1).sum()), "stage 2 must run on exactly the still-robust samples"
    assert bool((broken | ~broken_stage1).all()), "a sample broken in stage 1 was lost"
    assert int(broken.sum()) >= int(broken_stage1.sum())


def test_learned_surrogate_is_installed_as_the_backward(caplog: pytest.LogCaptureFixture) -> None:
    model = kwta_mlp()
    spy = BackwardSpy(model[3])
    model.insert(4, spy)
    x, y = batch(model)
    with caplog.at_level(logging.INFO, logger="attacks.surrogates"):
        create_attack("bpda", surrogate="learned", inner="pgd", inner_params={"steps": 2}, fit_steps=20)(
            model, x, y, ThreatModel("linf", 0.05)
        )
    assert spy.seen and all(isinstance(b, GroupGateSurrogate) for b, _, _ in spy.seen)
    assert "learned surrogate for layer 1" in caplog.text and "learned surrogate for layer 3" in caplog.text
    assert layer_settings(model)["3"] == ("exact", 1.0)


def test_no_capable_layer_runs_the_inner_attack_unchanged() -> None:
    """Acting on no layer is reported through ``last_switched_layers`` (the runner flags it: bpda-no-layer)."""
    model = relu_mlp()
    x, y = batch(model)
    threat = ThreatModel("linf", 0.1)
    attack = create_attack("bpda", surrogate="smooth", inner="pgd", inner_params={"steps": 5}, seed=4)
    x_adv = attack(model, x, y, threat)
    assert attack.last_switched_layers == []
    assert torch.equal(x_adv, create_attack("pgd", steps=5, seed=4)(model, x, y, threat))


class InputSpy(nn.Module):
    """Identity at the model's input that records, for each forward with gradients, ``layer``'s temperature (which
    stage is running) and the rows it was given."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.__dict__["layer"] = layer  # not a submodule
        self.seen: list[tuple[float, Tensor]] = []

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.seen.append((self.layer.temperature, x.detach().clone()))
        return x


@pytest.mark.parametrize(
    "stage_keep",
    [[1, 0.5], [1, 0.5, 0.25, 1], [1, 0, 1], [1, 1.5, 1], [0.5, 1, 1], [1, True, 1], "1,1,0.5", [1, "0.5", 1]],
)
def test_bad_stage_keep_is_a_clear_error(stage_keep: object) -> None:
    with pytest.raises(AttackConfigError, match="stage_keep"):
        create_attack("bpda", surrogate="smooth", inner="apgd-ce", temperature_schedule=[1.0, 0.5, 0.25],
                      stage_steps=[2, 2, 2], stage_keep=stage_keep)


def test_closest_to_breaking_keeps_the_largest_margins_in_index_order() -> None:
    todo = torch.tensor([1, 4, 5, 7, 9])
    margin = torch.tensor([-0.5, -0.1, -2.0, -0.1, -0.3])
    assert closest_to_breaking(todo, margin, 0.4).tolist() == [4, 7]  # ceil(0.4 * 5) = 2: the two at -0.1
    assert closest_to_breaking(todo, margin, 0.5).tolist() == [4, 7, 9]  # ceil(2.5) = 3
    assert closest_to_breaking(todo, margin, 0.01).tolist() == [4]  # at least one; a tie goes to the lower index
    assert closest_to_breaking(todo, margin, 1.0) is todo
    assert closest_to_breaking(todo[:0], margin[:0], 0.5).numel() == 0


def test_a_kept_fraction_stage_attacks_the_survivors_closest_to_breaking() -> None:
    """``stage_keep``: a later stage runs on ceil(keep · survivors) rows, those with the largest margin so far."""
    model = kwta_mlp()
    spy = InputSpy(model[1])
    model.insert(0, spy)
    x, y = batch(model, n=24)
    with torch.no_grad():
        clean_margin = margin_loss(model(x), y)
    eps = 1e-4  # breaks nothing, and moves no margin far: the ranking is the clean one
    order = clean_margin.argsort(descending=True)
    assert float(clean_margin[order[5]] - clean_margin[order[6]]) > 1e-2, "pick a batch with a clear 6th/7th gap"
    attack = create_attack("bpda", surrogate="smooth", inner="apgd-ce", temperature_schedule=[4.0, 1.0, 0.25],
                           stage_steps=[2, 2, 2], stage_keep=[1, 1, 0.25])
    x_adv = attack(model, x, y, ThreatModel("linf", eps))
    first = {}
    for temperature, rows in spy.seen:
        first.setdefault(temperature, rows)
    assert [len(first[t]) for t in (4.0, 1.0, 0.25)] == [24, 24, 6]
    nearest = (first[0.25][:, None, :] - x[None]).abs().amax(-1)  # [6, 24] Linf distances to the clean rows
    assert bool((nearest.amin(1) <= eps + 1e-6).all())
    assert sorted(nearest.argmin(1).tolist()) == sorted(order[:6].tolist())
    assert bool(ThreatModel("linf", eps).contains(x_adv, x).all())


def test_a_bad_inner_attack_names_the_inner_field() -> None:
    with pytest.raises(AttackConfigError, match="^inner: unknown attack 'pgdx'; known attacks: apgd-ce"):
        create_attack("bpda", surrogate="smooth", inner="pgdx")
    with pytest.raises(AttackConfigError, match="^inner_params: attack 'pgd': unknown parameter 'stepz'; valid: steps"):
        create_attack("bpda", surrogate="smooth", inner="pgd", inner_params={"stepz": 3})
    with pytest.raises(AttackConfigError, match=r"^inner_params: expected a mapping of the inner attack's parameters "
                       r"like \{steps: 40\}, got \[3\]"):  # before: invalid parameters [...]: cannot convert dictionary
        create_attack("bpda", surrogate="smooth", inner="pgd", inner_params=[3])  # update sequence element #0 ...
