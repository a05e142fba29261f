"""Where a forward cuts the autograd graph (Athalye et al. 2018 §4.1; Carlini et al. 2019 §5): the zero-gradients
flag names the last operation that received a gradient — a ``.detach()``, a NumPy round trip, a comparison
(thermometer encoding), ``argmax`` or a module under ``torch.no_grad()`` — and whether BPDA can replace it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from eval_helpers import make_record, make_result
from kwta_robust.diagnostics import run_checks
from kwta_robust.grad_cut import locate_cut
from kwta_robust.model_probes import measure_model


class Detach(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.detach()


class Net(nn.Module):
    """A linear classifier on ``[N, 1, 3, 4]`` (3 classes) behind one of the cuts named by ``how``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre, self.fc, self.how = Detach(), nn.Linear(12, 3), how

    def forward(self, x: Tensor) -> Tensor:
        if self.how == "detach":
            x = x.detach()
        elif self.how == "numpy":
            x = torch.from_numpy(np.round(x.detach().cpu().numpy() * 4) / 4).to(x)
        elif self.how == "thermometer":
            x = (x[:, :, None] > torch.tensor([0.25, 0.5, 0.75])[None, None, :, None, None]).to(x).mean(2)
        elif self.how == "module":
            x = self.pre(x)
        elif self.how == "no_grad":
            with torch.no_grad():
                return self.fc(x.flatten(1))
        z = self.fc(x.flatten(1))
        return nn.functional.one_hot(z.argmax(1), 3).to(x) if self.how == "one-hot" else z


@pytest.mark.parametrize("how, op, modules, advice", [
    ("detach", "detach", [""], "a call no BPDA can replace: move it into a module of its own"),
    ("numpy", "detach", [""], "a call no BPDA can replace"),
    ("thermometer", "gt", [""], "a call no BPDA can replace"),
    ("one-hot", "argmax", [""], "a call no BPDA can replace"),
    ("module", "detach", ["", "pre"], "BPDA can replace that module (bpda_layers: [pre], surrogate: identity)"),
    ("no_grad", "linear", ["", "fc"], "no surrogate restores a gradient under torch.no_grad()"),
])
def test_the_cut_is_located_and_named(how: str, op: str, modules: list[str], advice: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 1, 3, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    model = Net(how)
    probes = measure_model(model, x, y)
    assert probes["grad_missing"] and probes["grad_cut"] == {"op": op, "modules": modules, "no_grad": how == "no_grad"}
    flag = next(f for f in run_checks(make_record([make_result("pgd", [1] * 8)], probes=probes))
                if f.code == "zero-gradients")
    assert f"the last operation that received a gradient is {op} in the forward of " in flag.message
    assert advice in flag.message
    assert all(p.requires_grad for p in model.parameters()) and not model._forward_hooks  # left as it was


def test_no_cut_is_reported_where_the_gradient_flows() -> None:
    x, y = torch.rand(8, 1, 3, 4), torch.zeros(8, dtype=torch.long)
    assert measure_model(Net("none"), x, y)["grad_cut"] is None
    assert locate_cut(Net("none"), x)["op"] == "linear"  # the last op that saw a gradient: the logits' own


class RefusesFunctionModes(Net):
    """A model whose forward fails under a torch function mode (as some custom ops do): the cut stays unnamed."""

    def forward(self, x: Tensor) -> Tensor:
        if torch._C._is_torch_function_mode_enabled():
            raise RuntimeError("this op has no __torch_function__ support")
        return super().forward(x)


def test_a_model_that_cannot_be_watched_keeps_the_flag_without_a_place() -> None:
    x, y = torch.rand(8, 1, 3, 4), torch.zeros(8, dtype=torch.long)
    model = RefusesFunctionModes("detach")
    probes = measure_model(model, x, y)
    assert probes["grad_missing"] and probes["grad_cut"] is None
    flag = next(f for f in run_checks(make_record([make_result("pgd", [1] * 8)], probes=probes))
                if f.code == "zero-gradients")
    assert flag.severity == "critical" and "the last operation" not in flag.message
    assert not model._forward_hooks and not model._forward_pre_hooks  # every hook removed
