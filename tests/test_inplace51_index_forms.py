"""A kWTA written inline in a block's ``forward`` that zeroes the losers by integer indices: ``h[rows, idx] = 0``
(``rows = torch.arange(B)[:, None]``, ``idx`` from ``h.topk(N - k, dim=1, largest=False).indices`` or
``h.argsort(dim=1)[:, :N - k]``) on the ranked tensor or on a copy, and ``h.scatter_(1, idx, 0.0)`` on the ranked
tensor. Before, the layer probe read each as ``in_place`` (no gate): ``bpda_layers: auto`` left the block out,
``selections-outside-layers`` was critical and the worst case was not attacked through the top-k. Now
:func:`attacks.mask_assign.zeroing_assignment` / :func:`~attacks.mask_assign.zeroing_in_place` tell these calls from
shapes and types, the gate is read against a copy of the values from before the call and BPDA relaxes it in place
as ``h * (h >= kth)``: forward values bit for bit, the same gradient, which differs from the exact one. The winners'
form ``out[rows, idx] = h[rows, idx]`` was read before (a scatter of values) and still is. The 1-D indices of
``h[(h < kth).nonzero(as_tuple=True)] = 0`` stay ``in_place`` with a flag naming the forms BPDA does read. Conv
``[N, 1, 8, 8]`` → block (conv, kWTA of 128 of 256) → linear 10, seeded; threat model L∞."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from attacks.base import ThreatModel, create_attack
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.gates import scattered
from attacks.mask_assign import zeroing_in_place
from kwta_robust.api import evaluate_model
from kwta_robust.detect import detect_layers
from tests.test_inplace50_setitem_kwta import input_gradient

K = 128
X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
#: The loser-index forms (read as in_place before) and the winners' form (read before).
FORMS = ("loser_topk", "loser_copy", "loser_argsort", "loser_scatter_", "winner_index")


class Block(nn.Module):
    """``x + kwta(conv(x))``, the kWTA over each sample's 256 units (``h = c.flatten(1)``, a view) written ``how``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.conv, self.how = nn.Conv2d(4, 4, 3, padding=1), how

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x).flatten(1)
        rows, losers = torch.arange(h.shape[0])[:, None], h.shape[1] - K
        if self.how == "out":
            h = h * (h >= h.topk(K, dim=1).values[:, -1:])
        elif self.how == "loser_topk":
            h[rows, h.topk(losers, dim=1, largest=False).indices] = 0
        elif self.how == "loser_copy":
            idx = h.topk(losers, dim=1, largest=False).indices
            h = h.clone()
            h[rows, idx] = 0.0
        elif self.how == "loser_argsort":
            h[rows, h.argsort(dim=1)[:, :losers]] = 0
        elif self.how == "loser_scatter_":
            h.scatter_(1, h.topk(losers, dim=1, largest=False).indices, 0.0)
        elif self.how == "winner_index":
            idx = h.topk(K, dim=1).indices
            out = torch.zeros_like(h)
            out[rows, idx] = h[rows, idx]
            h = out
        else:  # "nonzero": 1-D indices, still in_place
            h[(h < h.topk(K, dim=1).values[:, -1:]).nonzero(as_tuple=True)] = 0
        return (x.flatten(1) + h).view_as(x)


def net(how: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Block(how), nn.Flatten(), nn.Linear(256, 10)).eval()


def bpda_gradient(model: nn.Module, backward: str, target: LayerTarget, inputs: Tensor = X) -> tuple[Tensor, Tensor]:
    """The output and the gradient of the summed logits at ``inputs`` with BPDA's ``backward`` on block ``"1"`` as
    ``target`` (:func:`tests.test_inplace50_setitem_kwta.input_gradient` with a target of more than one gate)."""
    x = inputs.clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        controllers = stack.enter_context(attached_backward(model, {"1": target}))
        stack.enter_context(surrogate_backward(model, backward, 0.1, controllers))
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


def exact_gradient(model: nn.Module, inputs: Tensor) -> Tensor:
    """The model's own gradient of the summed logits at ``inputs`` (no BPDA)."""
    x = inputs.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    return grad


def robust_correct(model: nn.Module, x: Tensor, y: Tensor, eps: float, **bpda: object) -> tuple[int, int]:
    """Samples still classified right after L∞ PGD and after BPDA smooth (``bpda``: its ``layers``), equal steps."""
    model.requires_grad_(False)
    threat = ThreatModel("linf", eps)
    counts = []
    for attack in (create_attack("pgd", steps=20, seed=0),
                   create_attack("bpda", surrogate="smooth", inner_params={"steps": 20, "seed": 0}, **bpda)):
        with torch.no_grad():
            counts.append(int((model(attack(model, x, y, threat)).argmax(1) == y).sum()))
    return counts[0], counts[1]


def test_zeroing_in_place_tells_loser_index_assignments_and_scatters_from_shapes_and_types() -> None:
    h = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    rows, idx = torch.arange(3)[:, None], h.topk(5, dim=1, largest=False).indices
    for func, args, kwargs in ((Tensor.__setitem__, (h, (rows, idx), 0), None),
                               (Tensor.__setitem__, (h, (rows.expand_as(idx), idx), 0.0), None),
                               (Tensor.scatter_, (h, 1, idx, 0.0), None), (Tensor.scatter_, (h, 1, idx), {"value": 0})):
        assert zeroing_in_place(func, args, kwargs), args[1:]  # before: False
    assert scattered(Tensor.__setitem__, (h, (rows, idx), 0), None) == (h, False)  # before: (None, False)
    for func, args, kwargs in ((Tensor.__setitem__, (h, (h < 0).nonzero(as_tuple=True), 0), None),
                               (Tensor.__setitem__, (h, torch.tensor([0, 2]), 0), None),
                               (Tensor.__setitem__, (h, (rows, idx), 1.0), None),
                               (Tensor.__setitem__, (h, (slice(None), idx[0]), 0), None),
                               (Tensor.__setitem__, (h.long(), (rows, idx), 0), None),
                               (Tensor.scatter_, (h, 1, idx, 1.0), None),
                               (Tensor.scatter_, (h, 1, idx, 0.0), {"reduce": "add"}),
                               (Tensor.scatter_, (h, 1, idx, torch.zeros(3, 5)), None)):
        assert not zeroing_in_place(func, args, kwargs), args[1:]


def test_the_probe_reads_each_index_form_as_a_gate_auto_acts_on() -> None:
    for how in FORMS:  # before: the loser forms in_place, no gate, auto_targets {}
        detection = detect_layers(net(how), X, log=False)
        op = "argsort" if how == "loser_argsort" else "topk"
        assert [(s["op"], s.get("gate"), s.get("k"), s.get("in_place")) for s in detection.selections] == [
            (op, "dense", K, None)], how
        assert detection.auto_targets() == {"1": LayerTarget("inline")}, how


def test_bpda_relaxes_each_index_form_as_the_out_of_place_gate_and_changes_the_gradient() -> None:
    exact = exact_gradient(net("out"), X)
    for backward in ("smooth", "identity"):
        twin_out, twin_grad = input_gradient(net("out"), backward, X)
        assert not torch.allclose(twin_grad, exact, rtol=1e-3, atol=1e-5)  # the relaxation changes the gradient
        for how in FORMS:  # before (loser forms): refused, a selection with no gate read
            model = net(how)
            with torch.no_grad():
                plain = model(X)
            out, grad = input_gradient(model, backward, X)
            assert torch.equal(out, plain) and torch.equal(out, twin_out), (how, backward)
            assert torch.allclose(grad, twin_grad, rtol=1e-5, atol=1e-7), (how, backward)
            assert torch.allclose(exact_gradient(net(how), X), exact, rtol=1e-5, atol=1e-7), how  # the same model


def test_bpda_smooth_on_the_loser_forms_does_at_least_as_well_as_pgd() -> None:
    with torch.no_grad():
        y = net("out")(X).argmax(1)
    for how in ("loser_topk", "loser_scatter_"):
        model = net(how)
        layers = detect_layers(model, X, log=False).auto_targets()
        assert layers == {"1": LayerTarget("inline")}, how  # before: {} (BPDA ran as plain PGD, the top-k unrelaxed)
        pgd, bpda = robust_correct(model, X, y, 0.03, layers=layers)
        assert bpda <= pgd and bpda < len(y), (how, pgd, bpda)


def test_indices_of_one_dimension_stay_in_place_with_a_flag_naming_the_forms_bpda_reads() -> None:
    with torch.no_grad():
        y = net("out")(X).argmax(1)
    config = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.03]}], "noise": [],
              "attacks": [{"attack": "pgd", "params": {"steps": 2}}], "bpda_layers": "auto",
              "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}}}
    record = evaluate_model(net("nonzero"), config, X, y, threads=1)
    assert [(s["op"], s.get("gate"), s.get("in_place")) for s in record.detection["selections"]] == [
        ("topk", None, True)]
    flags = [f for f in record.diagnostics if f.code == "selections-outside-layers"]
    assert len(flags) == 1 and flags[0].severity == "critical" and "\n" not in flags[0].message
    assert ("1: a kWTA made in place (h[(h < t).nonzero(as_tuple=True)] = 0 on the tensor it ranked, or another "
            "in-place form than h[h < t] = 0, h[rows, idx] = 0, h.scatter_(1, idx, 0), h.mul_(h >= t) or "
            "h.masked_fill_(h < t, 0))") in flags[0].message  # before: h[rows, idx] = 0 unnamed (it was in_place too)
    assert "or as h[h < t] = 0, h[rows, idx] = 0 (rows = torch.arange(B)[:, None], idx the losers' indices)" \
        in flags[0].message
