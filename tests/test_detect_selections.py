"""A kWTA the layer probe cannot see — a function call in ``forward``, a gate module with children, a gate called
with keyword arguments — is listed by its selection calls and flagged (``selections-outside-layers``; the flag's
rules are in test_diagnostics.py); so is input quantization written inline (a step function: its place is named in
the ``zero-gradients`` flag); compiled models the probe and BPDA cannot hook are refused before any work."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.base import ThreatModel, create_attack
from attacks.errors import AttackConfigError
from attacks.bpda_wrap import LayerTarget
from kwta_robust.config import EvalConfig
from kwta_robust.detect import detect_layers
from kwta_robust.detect_selections import selections_outside
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.layers import KWTA
from kwta_robust.model_checks import check_hookable
from kwta_robust.selection_entries import where_called
from kwta_robust.snapshot import ModelSnapshot
from eval_helpers import make_record, make_result
from kwta_robust.diagnostics import run_checks
from test_evaluate import linear_problem


def top_k(h: Tensor, k: int = 4) -> Tensor:
    """Keep the ``k`` largest units of each sample (a kWTA written as a function)."""
    return h * (h >= h.topk(k, dim=1).values[:, -1:]).to(h.dtype)


class Gate(nn.Module):
    def forward(self, h: Tensor) -> Tensor:
        return top_k(h)


class GateWithChild(nn.Module):
    """A gate module that is not a leaf (it holds a norm), so the leaf probe skips it."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Identity()

    def forward(self, h: Tensor) -> Tensor:
        return top_k(self.norm(h))


class Net(nn.Module):
    """``[N, 1, 4, 5] → [N, 2]``; ``how`` places the kWTA: ``function``, ``module``, ``parent`` (a gate with a
    child), ``keyword`` (a gate module called as ``gate(h=...)``), ``native`` (our KWTA layer) or ``relu``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.hidden, self.out = nn.Linear(20, 16), nn.Linear(16, 2)
        self.gate = {"module": Gate(), "keyword": Gate(), "parent": GateWithChild(), "native": KWTA(k=4),
                     "relu": nn.ReLU()}.get(how)

    def forward(self, x: Tensor) -> Tensor:
        h = self.hidden(x.flatten(1))
        if self.how == "function":
            h = top_k(h)
        elif self.how == "keyword":
            h = self.gate(h=h)
        else:
            h = self.gate(h)
        return self.out(h)


X = torch.rand(16, 1, 4, 5, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("how", "stack"), [
    ("function", [""]), ("parent", ["", "gate"]), ("keyword", ["", "gate"]), ("module", None), ("native", None),
    ("relu", None),
])
def test_selections_outside_the_layers_the_probe_classifies(how: str, stack: list[str] | None) -> None:
    model = Net(how).eval()
    before = ModelSnapshot.capture(model)
    detection = detect_layers(model, X)
    before.verify(model, "the layer probe")  # hooks removed, state and flags as they were
    # the top-k feeds a gate built in the same forward (h · (h ≥ t)): an inline gate, of 16 units per sample
    expected = [] if stack is None else [{"op": "topk", "kind": "selection", "modules": stack, "calls": 1,
                                          "gate": "dense", "k": 4, "group_size": 16, "probed": False}]
    assert detection.selections == expected
    if how in ("module", "native"):  # accounted for: a gate the probe found, or our layer
        assert list(detection.auto_targets()) == ["gate"]
    if how in ("parent", "keyword"):  # the module building it inline: BPDA relaxes the gate there
        assert detection.auto_targets() == {"gate": LayerTarget("inline")}
    if how == "module":
        assert selections_outside(model, X, accounted=[]) == [
            {"op": "topk", "kind": "selection", "modules": ["", "gate"], "calls": 1, "gate": "dense", "k": 4,
             "group_size": 16, "probed": False}]


def test_every_selection_operation_is_watched() -> None:
    class Sorts(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            h = x.flatten(1)
            t = torch.quantile(h, 0.75, dim=1, keepdim=True) + h.kthvalue(3, dim=1).values[:, None] * 0
            return h.sort(dim=1).values + torch.argsort(h, dim=1) * 0 + h * (h >= t)

    found = selections_outside(Sorts(), X, accounted=[])
    assert {s["op"] for s in found} == {"quantile", "kthvalue", "sort", "argsort"}
    assert all(s["modules"] == [""] and s["calls"] == 1 for s in found)
    assert where_called(found[0]) == f"{found[0]['op']} in the forward of the model itself"
    assert where_called({"op": "topk", "modules": ["", "block.gate"]}) == "topk in the forward of block.gate"


def test_an_evaluation_of_a_functional_kwta_relaxes_it_with_bpda_and_flags_it_without() -> None:
    """A gate built inline in the model's own forward: BPDA acts on the model itself (``""``, kind inline) and
    relaxes it, with no flag about it (it was refused before: tests/test_rootgate_inline.py); PGD alone runs and the
    flag says BPDA could not reach it."""
    _, data = linear_problem(24)
    settings = {
        "dataset": "toy", "batch_size": 24, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.05]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 3}},
                    {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 3}}}],
        "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}},
    }
    cfg = EvalConfig.from_dict(settings)
    relaxed = evaluate(Net("function").eval(), data, cfg, {}, progress=False)
    assert relaxed.result("bpda", "linf", 0.05).bpda_layers == {"": "wrapped inline"}
    assert not {"selections-outside-layers", "bpda-no-layer"} & {f.code for f in relaxed.diagnostics}
    functional = evaluate(Net("function").eval(), data, EvalConfig.from_dict({**settings, "attacks": [
        {"attack": "pgd", "params": {"steps": 3}}]}), {}, progress=False)
    codes = {f.code: f.severity for f in functional.diagnostics}
    assert codes["selections-outside-layers"] == "critical"
    assert functional.detection["selections"] == [{"op": "topk", "kind": "selection", "modules": [""], "calls": 1,
                                                   "gate": "dense", "k": 4, "group_size": 16, "probed": False}]
    as_module = evaluate(Net("module").eval(), data, cfg, {}, progress=False)
    assert "selections-outside-layers" not in {f.code for f in as_module.diagnostics}
    assert as_module.result("bpda", "linf", 0.05).bpda_layers is not None


def test_compiled_models_are_refused_before_any_work(tmp_path) -> None:
    eager = Net("module").eval()
    with pytest.warns(FutureWarning):  # torch deprecates TorchScript
        scripted = torch.jit.trace(eager, X)
    for model, what in ((scripted, "model m: it is TorchScript"),
                        (torch.compile(eager), "model m: it is torch.compile'd"),
                        (nn.Sequential(torch.compile(eager)), "model m: its module '0' is torch.compile'd")):
        with pytest.raises(ConfigError, match=f"^{what}"):
            check_hookable(model, "model m")
        with pytest.raises(ConfigError, match="^model: "):
            detect_layers(model, X)
        bpda = create_attack("bpda", surrogate="smooth", inner_params={"steps": 1}, layers=["gate"])
        with pytest.raises(AttackConfigError, match="so BPDA would change nothing; attack the eager nn.Module$"):
            bpda(model, X, torch.zeros(len(X), dtype=torch.long), ThreatModel("linf", 0.1))
    check_hookable(eager, "model m")
    _, data = linear_problem(8)
    cfg = EvalConfig.from_dict({"dataset": "toy", "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.05]}],
                                "attacks": [{"attack": "fgsm"}]})
    with pytest.raises(ConfigError, match="is TorchScript .* evaluate the eager nn.Module"):
        evaluate(scripted, data, cfg, {"label": "m"}, out_path=tmp_path / "r.json", progress=False)
    assert not (tmp_path / "r.json").exists()


class Quantize(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * 8) / 8


class Quantized(nn.Module):
    """``[N, 1, 4, 5] → [N, 2]`` behind 8-level input quantization, inline (``inline``) or as a module; a
    ``floor`` on the batch size (not the batch) is never listed."""

    def __init__(self, inline: bool) -> None:
        super().__init__()
        self.inline, self.quantize, self.net = inline, Quantize(), Net("relu")

    def forward(self, x: Tensor) -> Tensor:
        x = x * (torch.floor(torch.tensor(float(len(x)))) > 0)
        return self.net(torch.round(x * 8) / 8 if self.inline else self.quantize(x))


def test_inline_quantization_is_listed_as_a_step_and_named_by_the_zero_gradient_flag(caplog) -> None:
    with caplog.at_level("WARNING", logger="kwta_robust.detect"):
        inline = detect_layers(Quantized(inline=True).eval(), X)
    assert inline.selections == [{"op": "round", "kind": "step", "modules": [""], "calls": 1, "probed": False}]
    assert [r.getMessage() for r in caplog.records] == [
        "the model calls round in the forward of the model itself, outside any layer the probe can classify (1 "
        "call(s)); a step function: no gradient flows through it"]
    module = detect_layers(Quantized(inline=False).eval(), X)
    assert module.selections == [] and "quantize" in module.auto_targets()  # accounted: piecewise constant
    _, data = linear_problem(24)
    cfg = EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 24, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.05]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 3}}],
        "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}},
    })
    record = evaluate(Quantized(inline=True).eval(), data, cfg, {}, progress=False)
    flags = {f.code: f for f in record.diagnostics}
    assert "selections-outside-layers" not in flags  # a step is not a top-k selection
    zero = flags["zero-gradients"]
    assert zero.severity == "critical"
    assert "the forward calls round in the forward of the model itself (1 call(s))" in zero.message
    assert "move it into a module of its own" in zero.message
    assert zero.evidence["step_calls"] == record.detection["selections"]


def test_a_selection_inside_a_module_the_probe_saw_gets_advice_that_works() -> None:
    """A leaf module the probe classified from its calls but found no gate in holds a selection: the flag says so
    instead of advising to move it into a module of its own, which it already is. Its output shaped like its input
    (sorted values): name it in bpda_layers, and BPDA then runs through it; its output of another size (the top-k
    values): BPDA cannot replace it, the gradient-free attacks are the ones to trust."""
    class Sorted(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.sort(dim=1).values

    class TopValues(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.topk(4, dim=1).values

    pgd = make_result("pgd", [1] * 8 + [0] * 2)
    for layer, width, keeps, advice in (
            (Sorted(), 8, True, "; name 2 in bpda_layers (bpda_layers: [auto, 2], or --bpda-layer auto "
                                "--bpda-layer 2): BPDA relaxes it where its output is a top-k selection of its input, "
                                "else passes the gradient straight through (bpda-straight-through says where that "
                                "is wrong)"),
            (TopValues(), 4, False, "; BPDA cannot replace 2 without a backward map of your own: trust the "
                                    "gradient-free attacks (gradient estimation, square), or write it as its input "
                                    "times a 0/1 mask")):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(20, 8), layer, nn.Linear(width, 2)).eval()
        detection = detect_layers(model, X)
        assert detection.selections == [{"op": "sort" if keeps else "topk", "kind": "selection", "modules": ["", "2"],
                                         "calls": 1, "probed": True, "keeps_shape": keeps}]
        record = make_record([pgd])
        record.detection = {"layers": [], "probed": 4, "selections": detection.selections}
        flag, = [f for f in run_checks(record) if f.code == "selections-outside-layers"]
        assert "(2: a module the probe saw, whose " in flag.message and flag.message.endswith(advice)
        assert "move the selection" not in flag.message
        if keeps:  # following the advice works: BPDA runs through the named module
            cfg = EvalConfig.from_dict({
                "dataset": "toy", "batch_size": 16, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.05]}],
                "bpda_layers": ["auto", "2"],
                "attacks": [{"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}}],
                "diagnostics": {"enabled": False},
            })
            _, data = linear_problem(16)
            record = evaluate(model, data, cfg, {}, progress=False)
            assert "2" in record.result("bpda", "linf", 0.05).bpda_layers
            # sorting is no masking: the straight-through that BPDA fell back to skips it, and a flag says so
            assert record.detection["straight_through"] == {"2": {
                "module_class": "Sorted", "calls": 1, "relaxed_calls": 0, "masks_input": False, "keeps_elements": True,
                "parameters": 0}}
            flag, = [f for f in run_checks(record) if f.code == "bpda-straight-through"]
            assert flag.severity == "critical" and flag.evidence["wrong"] == {"2": ["bpda"]}


def test_a_selection_in_a_module_that_resizes_at_one_of_its_calls_does_not_keep_the_shape() -> None:
    """The top-4 values of 8 units (resized) and of 4 units (its input's shape): not every call keeps the shape, so
    BPDA cannot replace it by a relaxation of its input."""
    class TopValues(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.topk(4, dim=1).values

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.top, self.head = nn.Linear(20, 8), TopValues(), nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.top(self.top(self.a(x.flatten(1)))))

    torch.manual_seed(0)
    detection = detect_layers(Twice().eval(), X)
    assert detection.selections == [{"op": "topk", "kind": "selection", "modules": ["", "top"], "calls": 2,
                                     "probed": True, "keeps_shape": False}]
