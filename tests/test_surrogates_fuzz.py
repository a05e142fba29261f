"""Fuzzing BPDA's learned and model surrogates and surrogate plug-ins at run time: fit settings of another type or
beyond float32 are one line naming the field (were a raw TypeError / RuntimeError, or a bool or NaN taken as a
count); a fit that diverges is one line naming its learning rate (was a NaN surrogate whose gradient made BPDA a
silent no-op); a plug-in surrogate map returning NaN, None, another shape, dtype or device, or a detached tensor is
one line naming the layer (was a silent NaN, exact, broadcast or zero gradient); a builder returning no plan is one
line naming the plug-in; a builder that changes the model is refused and the model is put back; and a plug-in whose
forward differs from the model's does not change the robust accuracy, which is measured on the true model."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.bpda import SURROGATES, SurrogatePlan, _switched
from attacks.errors import AttackConfigError
from attacks.surrogates import DistillSettings, FitSettings
from bpda_models import D, batch, kwta_mlp
from kwta_robust.api import evaluate_model
from kwta_robust.errors import KwtaRobustError
from kwta_robust.layers import KWTA
from kwta_robust.snapshot import ModelChangedError


class Top8(nn.Module):
    """A foreign top-8 gate (not ours: BPDA wraps it through hooks)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * (x >= x.topk(8, dim=1).values[:, -1:]).to(x.dtype)


def image_model(foreign: bool) -> nn.Sequential:
    """``[N, 1, 4, 4] → [N, 3]``: a flattened kWTA MLP (ours) or one with a foreign top-8 gate."""
    if not foreign:
        return nn.Sequential(nn.Flatten(), *kwta_mlp()).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(D, 32), Top8(), nn.Linear(32, 3)).eval()


def image_batch(model: nn.Module, n: int = 8) -> tuple[Tensor, Tensor]:
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x).argmax(1)


def config(surrogate: str) -> dict[str, Any]:
    return {"n_examples": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}],
            "attacks": [{"attack": "bpda", "params": {"surrogate": surrogate, "inner": "pgd",
                                                       "inner_params": {"steps": 2}}}]}


def map_plan(fn: Callable[[Tensor], Any]) -> Callable[..., SurrogatePlan]:
    """A plug-in builder switching every target layer's backward to the map ``fn``."""
    def build(attack: Any, model: nn.Module, targets: Any, x: Tensor, threat: ThreatModel) -> SurrogatePlan:
        return SurrogatePlan(lambda: _switched(model, targets, {name: fn for name in targets}, None), {})
    return build


def run_plug_in(name: str, builder: Callable[..., Any], model: nn.Module) -> Any:
    x, y = image_batch(model)
    with SURROGATES.temporarily(name, builder):
        return evaluate_model(model, config(name), x, y, threads=1)


# --- fit and distillation settings ------------------------------------------------------------------------------
@pytest.mark.parametrize("params, text", [
    ({"fit_steps": 1.5}, "fit_steps: must be an integer >= 0, got 1.5"),
    ({"fit_steps": float("inf")}, "fit_steps: must be an integer >= 0, got inf"),
    ({"fit_steps": True}, "fit_steps: must be an integer >= 0, got True"),
    ({"fit_steps": "3"}, "fit_steps: must be an integer >= 0, got '3'"),
    ({"fit_perturbations": 1.5}, "fit_perturbations: must be an integer >= 1, got 1.5"),
    ({"fit_hidden": True}, "fit_hidden: must be an integer >= 1, got True"),
    ({"fit_hidden": float("nan")}, "fit_hidden: must be an integer >= 1, got nan"),
    ({"fit_max_rows": float("nan")}, "fit_max_rows: must be an integer >= 1, got nan"),
    ({"fit_max_rows": float("inf")}, "fit_max_rows: must be an integer >= 1, got inf"),
    ({"fit_max_rows": None}, "fit_max_rows: must be an integer >= 1, got None"),
    ({"fit_lr": "0.1"}, "fit_lr: must be a finite number > 0 within float32's range"),
    ({"fit_lr": float("inf")}, "fit_lr: must be a finite number > 0 within float32's range, 1.2e-38 to 3.4e+38, "
                               "got inf"),
    ({"fit_lr": 1e300}, "fit_lr: must be a finite number > 0 within float32's range"),
    ({"fit_lr": True}, "fit_lr: must be a finite number > 0 within float32's range"),
    ({"fit_lr": 1e38}, "fit_lr: must be at most 1e+30 (Adam's float32 arithmetic overflows beyond it; the default "
                       "is 0.01), got 1e+38"),
    ({"distill_lr": 3e37}, "distill_lr: must be at most 1e+30"),
    ({"distill_steps": 2.5}, "distill_steps: must be an integer >= 0, got 2.5"),
    ({"distill_lr": None}, "distill_lr: must be a finite number > 0 within float32's range"),
    ({"distill_lr": 1e-300}, "distill_lr: must be a finite number > 0 within float32's range"),
])
def test_fit_settings_of_another_type_are_one_line_naming_the_field(params: dict, text: str) -> None:
    with pytest.raises(AttackConfigError) as info:
        create_attack("bpda", surrogate="model", inner="pgd", **params)
    assert text in str(info.value) and "\n" not in str(info.value)


def test_valid_settings_are_kept_as_given() -> None:
    assert FitSettings(steps=0, lr=1e-8, hidden=1, max_rows=1).max_rows == 1
    assert DistillSettings(steps=0, lr=1e30).lr == 1e30


@pytest.mark.parametrize("surrogate, params, text", [
    ("learned", {"fit_lr": 1e30}, "fit_lr: the learned surrogate of layer '1' diverged (relative MSE nan) at fit_lr "
                                  "1e+30; lower fit_lr"),
    ("model", {"fit_lr": 1e30}, "fit_lr: the learned surrogate of layer '1' diverged"),
    ("model", {"distill_lr": 1e30}, "distill_lr: the distilled model twin diverged (logit relative MSE nan) at "
                                    "distill_lr 1e+30; lower distill_lr"),
])
def test_a_diverged_fit_is_one_line_naming_its_learning_rate(surrogate: str, params: dict, text: str) -> None:
    model = kwta_mlp()
    x, y = batch(model, 8)
    attack = create_attack("bpda", surrogate=surrogate, inner="pgd", inner_params={"steps": 1}, fit_steps=3,
                           distill_steps=2, **params)
    with pytest.raises(AttackConfigError) as info:
        attack(model, x, y, ThreatModel("linf", 0.1))
    assert text in str(info.value)


def test_a_diverged_fit_is_one_line_through_evaluate() -> None:
    model = image_model(False)
    x, y = image_batch(model)
    cfg = config("learned")
    cfg["attacks"][0]["params"].update(fit_lr=1e30, fit_steps=3)
    with pytest.raises(KwtaRobustError) as info:
        evaluate_model(model, cfg, x, y, threads=1)
    assert "fit_lr: the learned surrogate of layer '2' diverged" in str(info.value)


# --- plug-in surrogates -----------------------------------------------------------------------------------------
BAD_MAPS: dict[str, tuple[Callable[[Tensor], Any], str]] = {
    "nan": (lambda t: t * float("nan"), "returned NaN or infinite values"),
    "inf": (lambda t: t / 0.0, "returned NaN or infinite values"),
    "none": (lambda t: None, "returned NoneType, not a tensor"),
    "tuple": (lambda t: (t, t), "returned tuple, not a tensor"),
    "shape": (lambda t: t[:, :1], "returned torch.float32 (8, 1) on cpu"),
    "float64": (lambda t: t.double(), "returned torch.float64 (8, 32) on cpu"),
    "int": (lambda t: t.long(), "returned torch.int64 (8, 32) on cpu"),
    "meta": (lambda t: t.to("meta"), "returned torch.float32 (8, 32) on meta"),
    "detached": (lambda t: t.detach(), "returned a tensor that does not depend on x (detached)"),
}


@pytest.mark.parametrize("foreign", [False, True], ids=["ours", "foreign"])
@pytest.mark.parametrize("bad", sorted(BAD_MAPS))
def test_a_plug_in_map_that_misbehaves_is_one_line_naming_the_layer(bad: str, foreign: bool) -> None:
    fn, text = BAD_MAPS[bad]
    with pytest.raises(KwtaRobustError) as info:
        run_plug_in(f"fuzz-{bad}", map_plan(fn), image_model(foreign))
    message = str(info.value)
    layer = "'2'" if foreign else "'KWTA'"
    assert message.startswith(f"surrogate of BPDA layer {layer}: g(x) {text}") and "\n" not in message
    assert "shaped like the layer's output (torch.float32 (8, 32) on cpu)" in message


@pytest.mark.parametrize("foreign", [False, True], ids=["ours", "foreign"])
def test_a_plug_in_identity_map_runs_and_matches_the_built_in_identity(foreign: bool) -> None:
    plug = run_plug_in("fuzz-ident", map_plan(lambda t: t * 1.0), image_model(foreign))
    model = image_model(foreign)
    x, y = image_batch(model)
    built_in = evaluate_model(model, config("identity"), x, y, threads=1)
    assert plug.results[0].flags == built_in.results[0].flags


def test_a_builder_returning_no_plan_is_one_line_naming_the_plug_in() -> None:
    with pytest.raises(KwtaRobustError) as info:
        run_plug_in("fuzz-none", lambda *args: None, image_model(False))
    assert str(info.value) == ("surrogate: the builder of 'fuzz-none' returned NoneType, not a SurrogatePlan; fix "
                               "that plug-in")


@pytest.mark.parametrize("foreign", [False, True], ids=["ours", "foreign"])
def test_a_builder_changing_the_model_is_refused_and_the_model_put_back(foreign: bool) -> None:
    def build(attack: Any, model: nn.Module, targets: Any, x: Tensor, threat: ThreatModel) -> SurrogatePlan:
        with torch.no_grad():
            model[1].weight.add_(0.5)
        return SurrogatePlan(lambda: _switched(model, targets, "identity", None), {})

    model = image_model(foreign)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = image_batch(model)
    with SURROGATES.temporarily("fuzz-mutate", build), pytest.raises(ModelChangedError) as info:
        evaluate_model(model, config("fuzz-mutate"), x, y, threads=1)
    assert "changed the model's '1.weight'" in str(info.value)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


class AlwaysClassZero(nn.Module):
    """A "surrogate model" whose forward differs from the target's: class 0 for every input."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tensor([10.0, 0.0, 0.0]).expand(len(x), 3) + 0.0 * x.flatten(1).sum(1, keepdim=True)


def test_a_plug_in_model_whose_forward_differs_is_judged_on_the_true_model() -> None:
    """The inner attack sees class 0 everywhere (so it believes the samples of other classes broken at once and
    returns them unchanged); the runner re-classifies on the true model, where every clean sample is right: 100%."""
    @contextlib.contextmanager
    def wrong() -> Iterator[tuple[nn.Module, dict]]:
        yield AlwaysClassZero(), {}

    model = image_model(True)
    x, y = image_batch(model)
    assert (y != 0).any()  # some samples the fake model calls broken
    record = run_plug_in("fuzz-forward", lambda *args: SurrogatePlan(wrong, {}), model)
    with torch.no_grad():
        true_accuracy = float((model(x).argmax(1) == y).float().mean())
    assert record.worst("linf", 0.1).robust.accuracy == true_accuracy == 1.0


# --- layers the fit cannot use ----------------------------------------------------------------------------------
class TopValues(nn.Module):
    """A top-8 that returns the selected values ([N, 32] → [N, 8]): no shape-preserving surrogate stands in for it."""

    def forward(self, x: Tensor) -> Tensor:
        return x.topk(8, dim=1).values


def test_the_model_twin_keeps_a_module_changing_its_shape_as_it_is() -> None:
    """The layer check sends a module changing its number of elements to `surrogate: model`; the twin's fit refused
    it (`... use 'smooth' or 'model'`): now the twin keeps it exact and the robust accuracy is the true model's
    verdict on the attack's points (at eps 0 nothing can move: every clean-correct sample stays robust)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(D, 32), TopValues(), nn.Linear(8, 3)).eval()
    x, y = image_batch(model)
    cfg = config("model")
    cfg.update(bpda_layers=["2"], threats=[{"norm": "linf", "epsilons": [0.0, 0.1]}])
    cfg["attacks"][0]["params"].update(fit_steps=3, distill_steps=2)
    record = evaluate_model(model, cfg, x, y, threads=1)
    assert [r.bpda_layers for r in record.results] == [{"2": "wrapped module"}] * 2
    assert record.worst("linf", 0.0).robust.accuracy == 1.0


class WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net, self.unused = kwta_mlp(), KWTA(ratio=0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@pytest.mark.parametrize("surrogate", ["learned", "model"])
def test_a_named_layer_that_never_runs_is_one_line_or_left_out(surrogate: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    model = WithUnused().eval()
    x, y = batch(model, 8)
    attack = create_attack("bpda", surrogate=surrogate, inner="pgd", inner_params={"steps": 1}, fit_steps=2,
                           distill_steps=1, layers=["unused"])
    with pytest.raises(AttackConfigError) as info:  # was a raw ValueError from torch.cat
        attack(model, x, y, ThreatModel("linf", 0.1))
    assert str(info.value).startswith("layers: BPDA's layer(s) unused never ran in a forward of the model")
    attack = create_attack("bpda", surrogate=surrogate, inner="pgd", inner_params={"steps": 1}, fit_steps=2,
                           distill_steps=1, layers=["unused", "net.1"])
    attack(model, x, y, ThreatModel("linf", 0.1))
    assert sorted(attack.last_fit_error) == sorted(["net.1"] + (["logits"] if surrogate == "model" else []))
    assert "BPDA layer(s) unused never ran" in caplog.text
