"""A top-k gate written inline in the model's OWN ``forward`` (``h · (h ≥ h.topk(k).values[:, -1:])`` between two
layers of the root module). The layer probe found it (a selection with ``gate``, ``modules == [""]``) but
``bpda_layers: auto`` skipped the model itself, and every BPDA attack but ``model`` was refused ("BPDA cannot hook
the model's own forward"). The root is an ``nn.Module`` like any other: ``auto`` now acts on it (``""``, kind
``inline``) and BPDA relaxes that gate alone while the root's own forward runs (attacks/inline_gates.py), the
forward bit for bit as it was; ``learned`` (one map for the whole model's backward) is refused in one line, and a
gate made inside a custom ``autograd.Function`` in the root's forward is still refused."""

from __future__ import annotations

import contextlib
import io
import textwrap
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

import wild_kwta_models as wild
from attacks.base import AttackConfigError
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.gates import relaxed_gate
from attacks.inline_gates import InlineGates
from kwta_robust.cli import main
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.results import load_record
from kwta_robust.selection_entries import held_by
from test_detect_inline_gates import config, data, inline_modes  # noqa: F401 - a fixture
from test_wild_models_eval import write_user_run

X = wild.X  # [16, 1, 8, 8]
T = 0.5
K_DENSE, K_VOLUME = 8, 51  # winners of 32 hidden units, of 4 · 8 · 8 = 256 feature-map units
QUIET = {"bpda-no-layer", "selections-outside-layers", "bpda-straight-through"}


def dense_gate(h: Tensor) -> Tensor:
    return h * (h >= h.topk(K_DENSE, dim=1).values[:, -1:])


def volume_gate(h: Tensor) -> Tensor:
    f = h.flatten(1)
    t = f.kthvalue(f.shape[1] - K_VOLUME + 1, dim=1).values.view(-1, 1, 1, 1)
    return h * (h >= t)


class DenseRoot(nn.Module):
    """The user's net: the top-k inline between ``fc1`` and ``fc2`` in the model's own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x.flatten(1))
        thr = h.topk(K_DENSE, dim=1).values[:, -1:]
        return self.fc2(h * (h >= thr))

    def parts(self, x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        return self.fc1(x.flatten(1)), dense_gate, self.fc2


class ConvRoot(nn.Module):
    """A conv variant: a volume top-k (threshold by ``kthvalue`` over all of a sample's maps) in the root forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(256, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(volume_gate(self.conv(x)).flatten(1))

    def parts(self, x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        return self.conv(x), volume_gate, lambda g: self.head(g.flatten(1))


class FunctionRoot(nn.Module):
    """A custom ``autograd.Function`` kWTA (masked backward) called in the root forward: nothing to relax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(256, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(wild.MaskedKwta.apply(self.conv(x), K_VOLUME).flatten(1))


MODELS = {DenseRoot: "dense", ConvRoot: "volume"}


def gradients(model: nn.Module, backward: str | None) -> tuple[Tensor, Tensor]:
    """The output and the input gradient of the summed output, plain (``None``) or under BPDA on what ``auto``
    selects with ``backward``."""
    x = X.clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        if backward is not None:
            controllers = stack.enter_context(attached_backward(model, detect_layers(model, X).auto_targets()))
            stack.enter_context(surrogate_backward(model, backward, T, controllers))
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


def by_hand(model, grouping: str, gate: str) -> Tensor:
    """The input gradient with the gate's backward built by hand: ``relaxed`` (the smooth surrogate's relaxation at
    ``T``), ``straight`` (identity) or ``masked`` (the hard gate, plain autograd's); its forward is the hard gate."""
    x = X.clone().requires_grad_(True)
    h, hard, rest = model.parts(x)
    out = hard(h.detach())
    g = {"relaxed": lambda: relaxed_gate(h, out, grouping, T),
         "straight": lambda: h, "masked": lambda: h * (out != 0)}[gate]()
    (grad,) = torch.autograd.grad(rest(g - g.detach() + out).sum(), x)
    return grad


@pytest.mark.parametrize("net", list(MODELS), ids=lambda c: c.__name__)
def test_auto_acts_on_the_model_itself_as_inline(net) -> None:
    detection = detect_layers(wild.seeded(net), X, log=False)
    assert [(s["modules"], s.get("gate")) for s in detection.selections] == [([""], MODELS[net])]
    assert detection.auto_targets() == {"": LayerTarget("inline")}


@pytest.mark.parametrize("net", list(MODELS), ids=lambda c: c.__name__)
def test_bpda_relaxes_the_root_gate_alone_and_the_forward_is_exact(net) -> None:
    model = wild.seeded(net)
    plain_out, plain = gradients(model, None)
    out, smooth = gradients(model, "smooth")
    assert torch.equal(out, plain_out)
    torch.testing.assert_close(smooth, by_hand(model, MODELS[net], "relaxed"), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(plain, by_hand(model, MODELS[net], "masked"), rtol=1e-5, atol=1e-7)
    assert (smooth - plain).abs().max() > 1e-3  # the mask no longer cuts the gradient
    out, identity = gradients(model, "identity")
    assert torch.equal(out, plain_out)
    torch.testing.assert_close(identity, by_hand(model, MODELS[net], "straight"), rtol=1e-5, atol=1e-7)


def test_an_evaluation_relaxes_the_root_gate_with_no_flag_about_it(inline_modes: list[InlineGates]) -> None:
    made = inline_modes
    model = wild.seeded(ConvRoot)
    record = evaluate(model, data(model, X), config(), {}, progress=False)
    assert made and [mode.relaxed for mode in made] == [1] * len(made)  # each forward with gradients: its one gate
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"": "wrapped inline"}
    assert not {f.code for f in run_checks(record)} & QUIET


def test_the_learned_surrogate_on_the_root_gate_is_refused_in_one_line() -> None:
    model = wild.seeded(DenseRoot)
    learned = config(attacks=[{"attack": "bpda", "params": {"surrogate": "learned", "inner_params": {"steps": 1}}}])
    with pytest.raises(ConfigError) as refused:
        evaluate(model, data(model, X), learned, {}, progress=False)
    assert str(refused.value) == (
        "bpda_layers: BPDA's learned surrogate would replace the whole model's backward to relax the top-k gate "
        "built inline (topk in the forward of the model itself); use bpda surrogate: smooth or identity, which relax "
        "that gate alone, or model, gradient estimation or square")


def test_an_explicit_list_without_auto_is_refused_naming_auto() -> None:
    model = wild.seeded(DenseRoot)
    with pytest.raises(ConfigError) as refused:
        evaluate(model, data(model, X), config(bpda_layers=["fc1"]), {}, progress=False)
    assert "(topk in the forward of the model itself)" in str(refused.value)
    assert "add auto to bpda_layers, which relaxes the gate there" in str(refused.value)


def test_a_function_gate_in_the_root_forward_is_still_refused() -> None:
    with pytest.raises(AttackConfigError, match=r"^BPDA layer \(model\) \(FunctionRoot\) builds its top-k gate "
                                                r"where autograd records nothing"):
        gradients(wild.seeded(FunctionRoot), "smooth")


USER_FILE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 3)

    def forward(self, x):
        h = self.fc1(x.flatten(1))
        thr = h.topk(8, dim=1).values[:, -1:]
        h = h * (h >= thr)
        return self.fc2(h)


def net():
    torch.manual_seed(0)
    return Net().eval()
'''


def test_the_cli_evaluates_a_users_root_gate_with_bpda_on_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_root_net.py").write_text(textwrap.dedent(USER_FILE))
    monkeypatch.syspath_prepend(str(tmp_path))
    write_user_run(tmp_path)

    def cli(*extra: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["-q", "evaluate", "--model-factory", "my_root_net:net", "--config",
                           str(tmp_path / "eval.yaml"), "--data", str(tmp_path / "data.pt"), "--out",
                           str(tmp_path / "r.json"), "--no-progress", *extra])
        return status, out.getvalue(), err.getvalue()

    status, out, err = cli("--dry-run")
    assert status == 0 and "Traceback" not in err
    assert "- bpda acts on: (model) (wrapped inline)" in out.splitlines()
    status, _, err = cli()
    assert status == 0 and "Traceback" not in err
    record = load_record(tmp_path / "r.json")
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"": "wrapped inline"}
    assert [(s["op"], s["modules"], s["gate"]) for s in record.detection["selections"]] == [("topk", [""], "dense")]
    assert not {f.code for f in record.diagnostics} & QUIET


def test_acting_on_the_model_itself_holds_only_the_gates_of_its_own_forward() -> None:
    """The diagnostics' test of which selections BPDA relaxed: the model itself ("") is around every call, but BPDA
    on it relaxes only the gates built in its own forward, not a child's selection."""
    assert held_by({""}, {"op": "topk", "modules": [""], "gate": "dense"})
    assert not held_by({""}, {"op": "topk", "modules": ["", "block"], "probed": True})
    assert not held_by({""}, {"op": "topk", "modules": [""]})  # a selection in its forward that makes no gate
    assert held_by({"block"}, {"op": "topk", "modules": ["", "block"], "probed": True})


def test_the_model_surrogate_does_not_claim_the_root_gate() -> None:
    """The ``model`` surrogate's twin keeps the model's own forward, its gate hard: it acts on no layer here, and the
    flags say the gate was left in place (as before), not that BPDA relaxed it."""
    model = wild.seeded(DenseRoot)
    twin = config(attacks=[{"attack": "bpda", "params": {"surrogate": "model", "inner_params": {"steps": 1},
                                                         "fit_steps": 2, "distill_steps": 2}}])
    record = evaluate(model, data(model, X), twin, {}, progress=False)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {}
    flags = {f.code: f.severity for f in run_checks(record)}
    assert flags["selections-outside-layers"] == "critical" and "bpda-no-layer" in flags


class NestedRoot(nn.Module):
    """The dense root gate after a child block with a gate inline in ITS forward (wild.InlineResidual)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.block = nn.Conv2d(1, 4, 3, padding=1), wild.InlineResidual()
        self.fc1, self.fc2 = nn.Linear(256, 32), nn.Linear(32, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(dense_gate(self.fc1(self.block(self.conv(x)).flatten(1))))


def test_bpda_on_the_model_itself_relaxes_its_own_gate_and_leaves_a_childs_to_the_child(
        inline_modes: list[InlineGates]) -> None:
    """While a child module runs, the root's mode is off: the block's gate is the block's mode's to relax (one gate
    each per forward), not relaxed a second time by the root's."""
    model = wild.seeded(NestedRoot)
    assert detect_layers(model, X, log=False).auto_targets() == {"": LayerTarget("inline"),
                                                                 "block": LayerTarget("inline")}
    gradients(model, "smooth")  # one forward with gradients: the root's mode is entered first, then the block's
    assert [mode.relaxed for mode in inline_modes] == [1, 1]
