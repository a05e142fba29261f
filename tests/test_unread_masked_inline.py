"""An inline top-k gate the layer probe reads on its inputs but BPDA cannot read on some call: the forward builds it
as ``f * (f >= t)`` on a batch and as ``f[(f < t).nonzero(as_tuple=True)] = 0`` (the tensor ``topk`` ranked zeroed
in place by integer indices, which no reading compares with its values from before; before attacks/mask_assign.py,
``g = f.clone(); g[f < t] = 0``, then ``f.mul_(f >= t)``, which it now reads too) on a single sample, or after a
flag flipped since the probe. BPDA's mode for inline gates (attacks/inline_gates.py) relaxed nothing there, so the
gate's 0/1 mask cut the gradient exactly as plain autograd's does, and the attack's number read as a BPDA result.
Such a call — a selection ran in the module's own forward, no gate was relaxed, autograd records its output — is now
refused in one line (attacks/bpda_wrap.py ModuleBackward), mid-attack in an evaluation (earlier attacks stay in the
partial record). Calls that relax their gate change nothing."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import wild_kwta_models as wild
from attacks.base import AttackConfigError
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from kwta_robust.cli import main
from kwta_robust.detect import detect_layers
from kwta_robust.results import load_record
import test_wild_models as wild_bpda
from test_wild_models import bpda

X = wild.X
K = int(wild.RATIO * 256)


def refusal(module_class: str, shape: tuple[int, ...]) -> str:
    return (f"BPDA layer '1' ({module_class}) ran a top-k selection in its forward but built no gate BPDA could read "
            f"there (on an input of shape {shape}), so the gate's 0/1 mask would cut the gradient unseen; build the "
            "gate in one form on every input (h * (h >= t), not h[m.nonzero(as_tuple=True)] = 0 on the ranked tensor "
            "or a branch on the batch), or call that kWTA from a module of its own (bpda_layers: auto then replaces "
            "its backward), or use bpda surrogate: model, gradient estimation or square")


class BatchBranch(nn.Module):
    """``x + f · (f ≥ t)``; on a single sample the same gate assigned in place into ``f`` by integer indices."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.by_index = False

    def forward(self, x: Tensor) -> Tensor:
        f = self.conv(x).flatten(1)
        t = f.topk(K, dim=1).values[:, -1:]
        if self.by_index or f.shape[0] == 1:
            f[(f < t).nonzero(as_tuple=True)] = 0
            return (x.flatten(1) + f).view_as(x)
        return x + (f * (f >= t)).view_as(x)


def batch_branch() -> nn.Module:
    return wild.seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), BatchBranch(), nn.Flatten(),
                                             nn.Linear(256, 3)))


def input_gradient(model: nn.Module, x: Tensor, backward: str | None) -> tuple[Tensor, Tensor]:
    x = x.clone().requires_grad_(True)
    with bpda(model, backward):  # the probe reads the gate on all of X, as auto selects it
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


def test_the_probe_reads_the_gate_on_its_batch() -> None:
    assert detect_layers(batch_branch(), X, log=False).auto_targets() == {"1": LayerTarget("inline")}


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_a_single_sample_call_that_relaxes_no_gate_is_refused(backward: str) -> None:
    model = batch_branch()
    with pytest.raises(AttackConfigError) as refused:
        input_gradient(model, X[:1], backward)
    assert str(refused.value) == refusal("BatchBranch", (1, 4, 8, 8))


def test_a_flag_flipped_after_the_probe_is_refused() -> None:
    model = batch_branch()
    targets = detect_layers(model, X, log=False).auto_targets()
    assert targets == {"1": LayerTarget("inline")}
    model[1].by_index = True
    x = X[:4].clone().requires_grad_(True)
    with pytest.raises(AttackConfigError) as refused, attached_backward(model, targets) as controllers, \
            surrogate_backward(model, "smooth", wild_bpda.T, controllers):
        model(x)
    assert str(refused.value) == refusal("BatchBranch", (4, 4, 8, 8))


def test_calls_that_relax_their_gate_are_unchanged_and_not_refused() -> None:
    model = batch_branch()
    plain_out, plain = input_gradient(model, X, None)
    out, smooth = input_gradient(model, X, "smooth")
    assert torch.equal(out, plain_out)
    assert (smooth - plain).abs().max() > 1e-3  # relaxed: the mask no longer cuts the gradient


def test_a_call_autograd_does_not_record_is_not_refused() -> None:
    model = batch_branch()
    model.requires_grad_(False)
    with bpda(model, "smooth"), torch.enable_grad():
        out = model(X[:1])
    assert not out.requires_grad and torch.equal(out, model(X[:1]))


def test_the_cli_refuses_mid_attack_in_one_line_and_keeps_the_earlier_attack(tmp_path: Path) -> None:
    """Batches of one sample: the BPDA pre-check probes the first samples together and passes; BPDA's first
    gradient, after PGD, is refused."""
    model = batch_branch()
    with torch.no_grad():
        torch.save({"x": X[:2], "y": model(X[:2]).argmax(1)}, tmp_path / "data.pt")  # clean: BPDA attacks them
    (tmp_path / "eval.yaml").write_text(
        "dataset: mnist5k\nn_examples: 2\nbatch_size: 1\ndevice: cpu\nseed: 0\n"
        "threats: [{norm: linf, epsilons: [0.001]}]\n"  # PGD breaks no sample: BPDA attacks both

        "attacks: [{attack: pgd, params: {steps: 1}}, "
        "{attack: bpda, params: {surrogate: smooth, inner_params: {steps: 1}}}]\n")
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = main(["-q", "evaluate", "--model-factory", "test_unread_masked_inline:batch_branch", "--config",
                       str(tmp_path / "eval.yaml"), "--data", str(tmp_path / "data.pt"), "--out",
                       str(tmp_path / "r.json"), "--no-progress"])
    lines = [line for line in err.getvalue().splitlines() if line.strip() and "no weights file given" not in line]
    assert status == 2 and "Traceback" not in err.getvalue()
    assert len(lines) == 1 and refusal("BatchBranch", (1, 4, 8, 8)) in lines[0], lines
    assert [r.label for r in load_record(tmp_path / "r.json").results] == ["pgd"]  # PGD's result is kept
