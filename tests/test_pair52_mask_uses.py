"""Gates the layer probe under-counted, so BPDA relaxed one and another's exact 0/1 mask cut the gradient with no
refusal (kwta_robust/mask_uses.py, kwta_robust/detect_selections.py). Both selections first, then both gates (two
branches ``h1``, ``h2`` ranked, then ``h1 * (h1 >= t1)`` and ``h2 * (h2 >= t2)``, out of place or ``mul_``; one map
gated by a volume top-k and a local one), and one mask applied twice (``g = f * m; g * m``, ``f.mul_(m)`` twice) or
to two tensors (``f * m + x * m``): the probe said one gate (no ``gates`` on the entry, ``LayerTarget("inline")``),
BPDA relaxed the first gate only and ran. Now each application of a selection's mask read as no gate counts as one
gate more, so the entry says ``gates: 2`` and BPDA refuses the call with its existing one-line message (an
evaluation with a BPDA attack stops at its pre-check with that ConfigError, before the clean pass). Blocks with one
gate per selection, and a mask read as its gate then applied once (``(f >= t).float()``), count as before.
Conv ``[N, 1, 8, 8]`` → 4 channels → block → linear 10, seeded."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import Tensor, nn

from attacks.base import AttackConfigError
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from kwta_robust.api import evaluate_model
from kwta_robust.detect import detect_layers
from kwta_robust.errors import ConfigError

X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
K = 128
REFUSAL = ("BPDA layer '1' (Block) builds 2 top-k gates in its forward (read by the layer probe: each application "
           "of a selection's 0/1 mask is one) but BPDA could read "
           "and relax only 1 of them there (on an input of shape (8, 4, 8, 8)), so the other gates' 0/1 masks would "
           "cut the gradient unseen; ")
#: Forms the probe read as one gate (BPDA relaxed one gate of each, silently), each with its twin: the same block
#: written with one gate per selection, read and relaxed as before (``one_by_one``: the same output, both gates
#: relaxed; ``once``: the same output, one mask applied once; ``float_mask``: a mask read as its gate, applied once).
TWINS = {"both_first": "one_by_one", "both_first_mul_": "one_by_one", "twice": "once", "twice_mul_": "once",
         "two_tensors": "float_mask", "volume_local": None}
#: The twins' readings, as before: (selection entries' (op, gate, gates), auto_targets).
TWIN_READ = {"one_by_one": ([("topk", "dense", 2)], {"1": LayerTarget("inline", gates=2)}),
             "once": ([("topk", "dense", None)], {"1": LayerTarget("inline")}),
             "float_mask": ([("topk", "dense", None)], {"1": LayerTarget("inline")})}


class Block(nn.Module):
    """``x + gates(conv(x))`` written ``how`` (see the module docstring)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.c1, self.c2, self.how = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), how

    def forward(self, x: Tensor) -> Tensor:
        f1, f2, how = self.c1(x).flatten(1), self.c2(x).flatten(1), self.how
        if how == "one_by_one":  # a selection, its gate, the next selection, its gate: both read and relaxed
            g1 = f1 * (f1 >= f1.topk(K, dim=1).values[:, -1:])
            return x + (g1 + f2 * (f2 >= f2.topk(K, dim=1).values[:, -1:])).view_as(x)
        if how.startswith("both_first"):
            t1, t2 = f1.topk(K, dim=1).values[:, -1:], f2.topk(K, dim=1).values[:, -1:]
            if how.endswith("mul_"):
                return x + (f1.mul_(f1 >= t1) + f2.mul_(f2 >= t2)).view_as(x)
            return x + (f1 * (f1 >= t1) + f2 * (f2 >= t2)).view_as(x)
        if how == "volume_local":  # both selections of one map, then both gates
            h = self.c1(x)
            t1, t2 = f1.topk(K, dim=1).values[:, -1:], h.topk(2, dim=1).values[:, -1:]
            return x + (f1 * (f1 >= t1)).view_as(h) * (h >= t2)
        m = f1 >= f1.topk(K, dim=1).values[:, -1:]
        if how == "once":
            return x + (f1 * m).view_as(x)
        if how == "twice":
            g = f1 * m
            return x + (g * m).view_as(x)
        if how == "twice_mul_":
            return x + f1.mul_(m).mul_(m).view_as(x)
        if how == "two_tensors":
            return (f1 * m + x.flatten(1) * m).view_as(x)
        return x + (f1 * m.float()).view_as(x)  # "float_mask": the mask read as its gate, applied once


def net(how: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Block(how), nn.Flatten(), nn.Linear(256, 10)).eval()


def gradient(model: nn.Module, target: LayerTarget | None, backward: str = "identity") -> tuple[Tensor, Tensor]:
    """The output and the gradient of the summed logits at ``X`` with BPDA's ``backward`` on block ``"1"`` as
    ``target`` (``None``: plain autograd)."""
    x = X.clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        if target is not None:
            controllers = stack.enter_context(attached_backward(model, {"1": target}))
            stack.enter_context(surrogate_backward(model, backward, 0.1, controllers))
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


def read(how: str) -> tuple[list[tuple], dict]:
    detection = detect_layers(net(how), X, log=False)
    return [(s["op"], s.get("gate"), s.get("gates")) for s in detection.selections], detection.auto_targets()


@pytest.mark.parametrize("how", list(TWINS))
def test_an_under_counted_block_cut_the_gradient_silently_and_is_now_refused(how: str) -> None:
    twin = TWINS[how]
    if twin is not None:  # the twin reads and relaxes as before
        assert read(twin) == TWIN_READ[twin], twin
        twin_out, twin_grad = gradient(net(twin), TWIN_READ[twin][1]["1"])
        assert not torch.allclose(twin_grad, gradient(net(twin), None)[1], rtol=1e-3, atol=1e-5), twin
    if twin in ("one_by_one", "once"):  # the target the probe gave before: BPDA ran, its gradient not the twin's
        out, grad = gradient(net(how), LayerTarget("inline"))
        assert torch.allclose(out, twin_out, rtol=1e-6, atol=1e-6), how  # the same model
        assert not torch.allclose(grad, twin_grad, rtol=1e-3, atol=1e-5), how
        if twin == "once":  # the first gate's straight-through undone by the second mask: plain autograd's gradient
            assert torch.allclose(grad, gradient(net(how), None)[1], rtol=1e-5, atol=1e-7), how
    selections, targets = read(how)  # before: gates None, LayerTarget("inline"), and BPDA ran as above
    # volume_local: an entry per selection since probe53 (its two top-k calls build different gates)
    assert [gates for _, _, gates in selections] == [2] * (1 + (how == "volume_local")), selections
    assert targets == {"1": LayerTarget("inline", gates=2)}
    for backward in ("identity", "smooth"):
        with pytest.raises(AttackConfigError) as refused:
            gradient(net(how), targets["1"], backward)
        assert "\n" not in str(refused.value) and str(refused.value).startswith(REFUSAL), how


def test_both_gates_are_named_where_a_volume_and_a_local_selection_come_first() -> None:
    """Since probe53 each selection has its entry (before: one entry, dense K/256, k_seen [[K, 256], [2, 4]])."""
    entries = detect_layers(net("volume_local"), X, log=False).selections
    assert [(e["gate"], e["k"], e["group_size"], e.get("k_seen"), e["calls"]) for e in entries] == [
        ("dense", K, 256, None, 1), ("local", 2, 4, None, 1)]  # before pair52: no k_seen (the local gate unseen)


def test_an_evaluation_with_bpda_stops_at_its_pre_check_with_the_refusal() -> None:
    model = net("both_first")
    with torch.no_grad():
        y = model(X).argmax(1)
    config = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.03]}], "noise": [],
              "attacks": [{"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}}],
              "bpda_layers": "auto", "diagnostics": {"enabled": False}}
    with pytest.raises(ConfigError) as refused:  # before: a record, BPDA's number and no flag about the second gate
        evaluate_model(model, config, X, y, threads=1)
    assert str(refused.value).startswith(REFUSAL)
