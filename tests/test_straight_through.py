"""Modules named in ``bpda_layers`` that BPDA can only pass the gradient straight through
(kwta_robust/straight_through.py, the ``bpda-straight-through`` check in kwta_robust/bpda_checks.py): a module that
maps its input before its top-k is flagged critical (the identity skips that map), one whose top-k count varies is a
warning under the smooth surrogate only, and a module BPDA cannot hook at all is refused before the first attack."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.config import EvalConfig
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.snapshot import ModelSnapshot
from eval_helpers import make_record, make_result
from test_evaluate import linear_problem
from test_gates_fuzz import argmax_loop_mask


def top_k(h: Tensor, k: int) -> Tensor:
    """Keep each sample's ``k`` largest units, without torch's selection operations (an argmax loop): a top-k built
    from ``topk`` in a module's forward is an inline gate that BPDA relaxes alone (test_detect_inline_gates.py), so
    the modules here, which BPDA can only pass straight through, pick their winners otherwise."""
    return h * argmax_loop_mask(h, k).to(h.dtype)


class LinearTopK(nn.Module):
    """A linear layer and its top-k in one module (what a user's ``KWTALinear`` often is)."""

    def __init__(self, width: int = 20) -> None:
        super().__init__()
        self.linear = nn.Linear(20, width)

    def forward(self, x: Tensor) -> Tensor:
        return top_k(self.linear(x), 3)


class ReluThenTopK(nn.Module):
    """A ReLU before the top-k: fewer than k positive units leave fewer winners, so no constant k is seen."""

    def forward(self, x: Tensor) -> Tensor:
        return top_k(torch.relu(x), 6)


class TupleGate(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask = argmax_loop_mask(x, 3).to(x.dtype)
        return x * mask, mask


class Unpack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = TupleGate()

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(x)[0]


def build(middle: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    if isinstance(middle, LinearTopK):
        return nn.Sequential(nn.Flatten(), middle, nn.Linear(middle.linear.out_features, 2)).eval()
    return nn.Sequential(nn.Flatten(), nn.Linear(20, 8), middle, nn.Linear(8, 2)).eval()


def run(model: nn.Module, named: str, *surrogates: str, square: bool = False):
    attacks = [{"attack": "bpda", "label": f"bpda-{s}", "params": {"surrogate": s, "inner_params": {"steps": 2}}}
               for s in surrogates]
    if square:
        attacks.append({"attack": "square", "params": {"n_queries": 20}})
    cfg = EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 16, "n_examples": 16, "seed": 0, "mode": "independent",
        "threats": [{"norm": "linf", "epsilons": [0.05]}], "bpda_layers": ["auto", named], "attacks": attacks,
        "diagnostics": {"enabled": True, "gradient_batch": 16}})
    return evaluate(model, linear_problem(16)[1], cfg, {}, progress=False)


def flag_of(record):
    found = [f for f in record.diagnostics if f.code == "bpda-straight-through"]
    return found[0] if found else None


def test_a_module_mapping_its_input_before_the_top_k_is_flagged_critical() -> None:
    model = build(LinearTopK())
    before = ModelSnapshot.capture(model)
    record = run(model, "1", "smooth", "identity")
    before.verify(model, "the evaluation")  # hooks, state and flags as they were
    assert record.detection["straight_through"] == {"1": {
        "module_class": "LinearTopK", "calls": 1, "relaxed_calls": 0, "masks_input": False, "keeps_elements": True,
        "parameters": 420}}
    flag = flag_of(record)
    assert flag.severity == "critical" and flag.evidence["wrong"] == {"1": ["bpda-identity", "bpda-smooth"]}
    assert "1 (LinearTopK; 420 parameters), whose output is not its input times a 0/1 mask" in flag.message
    assert flag_of(run(model, "1", "smooth", square=True)).severity == "warning"  # square needs no backward


def test_a_masking_module_without_a_constant_count_is_a_warning_under_the_smooth_surrogate_only() -> None:
    model = build(ReluThenTopK())
    smooth = run(model, "2", "smooth")
    assert smooth.detection["straight_through"]["2"]["masks_input"] is True
    assert smooth.detection["straight_through"]["2"]["relaxed_calls"] == 0
    flag = flag_of(smooth)
    assert flag.severity == "warning" and flag.evidence == {
        "wrong": {}, "coarse": {"2": ["bpda-smooth"]}, "modules": {"2": smooth.detection["straight_through"]["2"]},
        "gradient_free": []}
    assert flag_of(run(model, "2", "identity")) is None  # straight-through is what the identity surrogate means
    assert flag_of(run(model, "2", "learned")) is None  # a fitted surrogate, not the identity


def test_the_smooth_surrogate_is_flagged_only_on_the_calls_it_did_not_relax() -> None:
    record = make_record([make_result("bpda", [1] * 10, kind="bpda", bpda_layers={"2": "wrapped module"})])
    record.detection = {"layers": [], "probed": 3, "straight_through": {"2": {
        "module_class": "Gate", "calls": 2, "relaxed_calls": 2, "masks_input": True, "parameters": 0}}}
    assert [f for f in run_checks(record) if f.code == "bpda-straight-through"] == []
    record.detection["straight_through"]["2"]["relaxed_calls"] = 1
    flag, = [f for f in run_checks(record) if f.code == "bpda-straight-through"]
    assert flag.severity == "warning" and "on 1 of its 2 probed calls" in flag.message
    record.detection["straight_through"] = {}  # a gate the probe classified: BPDA relaxes it, nothing to say
    assert [f for f in run_checks(record) if f.code == "bpda-straight-through"] == []


class KeywordCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = ReluThenTopK()

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(x=x)


@pytest.mark.parametrize("parent, what", [
    (Unpack, "module '2.gate' (TupleGate) returns a tuple"),
    (KeywordCall, "module '2.gate' (ReluThenTopK) is called with keyword arguments or several inputs"),
])
def test_a_named_module_bpda_cannot_hook_is_refused_before_any_attack(parent: type, what: str) -> None:
    """Its hooks would see no tensor to replace: BPDA would change nothing, or stop after the other attacks ran."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 8), parent(), nn.Linear(8, 2)).eval()
    with pytest.raises(ConfigError) as caught:
        run(model, "2.gate", "smooth")
    assert str(caught.value).startswith(f"bpda_layers: {what}, not one tensor in and one out")


def test_a_named_module_that_resizes_its_input_is_refused_before_any_attack() -> None:
    with pytest.raises(ConfigError) as caught:
        run(build(LinearTopK(width=8)), "1", "smooth")
    assert str(caught.value).startswith("bpda_layers: module '1' (LinearTopK) changes the number of elements of its "
                                        "input, and BPDA's smooth surrogate needs an output shaped like its input")
