"""A kWTA written as a custom ``torch.autograd.Function`` with a masked backward, called inline in a residual
block's forward (``x + MaskedKwta.apply(conv(x), k)``; tests/wild_kwta_models.py). The probe marks the inline gate,
``bpda_layers: auto`` acts on the block ("wrapped inline", no flag), but the gate is made inside the Function's
``forward``, where autograd records nothing: BPDA replaced nothing, the Function's own masked backward ran, and the
attack's number read as a BPDA result with a gradient identical to plain autograd's. Such a call is now refused in
one line (attacks/inline_gates.py counts the gates made while autograd records nothing; attacks/bpda_wrap.py
refuses a call that relaxed none but made one), by an evaluation before its clean pass (kwta_robust/bpda_preflight.py).
A threshold computed under ``torch.no_grad`` with the mask applied outside it is still relaxed, not refused."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import wild_kwta_models as wild
from attacks.base import AttackConfigError
from attacks.bpda_wrap import LayerTarget
from kwta_robust.cli import main
from kwta_robust.detect import detect_layers
from test_wild_models import bpda
from test_wild_models_eval import write_user_run

X = wild.X
REFUSAL = ("BPDA layer '1' (FunctionInBlock) builds its top-k gate where autograd records nothing (inside a custom "
           "torch.autograd.Function, or under torch.no_grad), so BPDA cannot relax it and the gate's own backward "
           "would run; call that kWTA from a module of its own (bpda_layers: auto then replaces its backward), or use "
           "bpda surrogate: model, gradient estimation or square")


class NoGradThreshold(nn.Module):
    """``x + f · (f ≥ t)`` with the threshold ``t`` computed under ``torch.no_grad`` (common in released code)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        f = self.conv(x).flatten(1)
        with torch.no_grad():
            t = f.topk(int(wild.RATIO * f.shape[1]), dim=1).values[:, -1:]
        return x + (f * (f >= t)).view_as(x)


def test_the_inline_function_gate_is_marked_and_auto_acts_on_its_block() -> None:
    detection = detect_layers(wild.function_in_block(), X, log=False)
    assert detection.auto_targets() == {"1": LayerTarget("inline")}


@pytest.mark.parametrize("fn", [wild.MaskedKwta, wild.STEKwta], ids=lambda f: f.__name__)
@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_bpda_refuses_a_gate_it_cannot_reach_instead_of_running_its_own_backward(fn, backward: str) -> None:
    model = wild.function_in_block(fn)
    x = X.clone().requires_grad_(True)
    with pytest.raises(AttackConfigError) as refused, bpda(model, backward):
        model(x)
    assert str(refused.value) == REFUSAL


def test_a_threshold_taken_under_no_grad_is_still_relaxed() -> None:
    model = wild.seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), NoGradThreshold(), nn.Flatten(),
                                              nn.Linear(256, 3)))
    assert detect_layers(model, X, log=False).auto_targets() == {"1": LayerTarget("inline")}
    x = X.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(x).sum(), x)
    x = X.clone().requires_grad_(True)
    with bpda(model, "smooth"):
        out = model(x)
        (smooth,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(out.detach(), model(X).detach())
    assert (smooth - plain).abs().max() > 1e-3  # the gate's mask no longer cuts the gradient


def test_the_cli_refuses_it_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    model = wild.function_in_block()
    write_user_run(tmp_path)  # PGD, then BPDA smooth: one step each
    with torch.no_grad():
        torch.save({"x": X, "y": model(X).argmax(1)}, tmp_path / "data.pt")  # every sample clean: BPDA attacks
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = main(["-q", "evaluate", "--model-factory", "wild_kwta_models:function_in_block", "--config",
                       str(tmp_path / "eval.yaml"), "--data", str(tmp_path / "data.pt"), "--out",
                       str(tmp_path / "r.json"), "--no-progress"])
    lines = [line for line in err.getvalue().splitlines() if line.strip() and "no weights file given" not in line]
    assert status == 2 and "Traceback" not in err.getvalue()
    assert len(lines) == 1 and REFUSAL in lines[0], lines
    assert not (tmp_path / "r.json").exists()  # refused by the BPDA pre-check, before the clean pass and PGD
