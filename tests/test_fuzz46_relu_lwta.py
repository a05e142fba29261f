"""An LWTA over blocks of 2 channels on ReLU outputs, ``v = relu(h).view(B, C / 2, 2, H, W)``,
``(v · (v == v.amax(2, keepdim=True))).view_as(h)`` (found by the wild-model fuzzer): where most blocks are all zero,
the first grouping that reads its output is not the blocks (a ``"row"`` top-6 of 8 here, every row's zeros the
losers), and the layer probe and BPDA, which after an ``amax`` look for a gate of one winner per group only, read
no gate: the probe noted none (BPDA acted on nothing), or, where it had on its batch, BPDA refused the evaluation
("ran a top-k selection in its forward but built no gate BPDA could read"). Now the groupings are tried again for
one winner per group (:func:`attacks.one_winner.one_winner_read`). Inputs ``[6, 3, 8, 8]``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attacks.gates import read_gate
from attacks.inline_gates import InlineGates
from attacks.one_winner import one_winner_read
from kwta_robust.api import evaluate_model

X = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))


#: PGD and BPDA smooth, two steps each, at Linf 0.1 (the budget check off): what the fuzzer ran.
PGD_AND_BPDA = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}], "noise": [],
                "attacks": [{"attack": "pgd", "params": {"steps": 2}},
                            {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}}],
                "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}}}


class ReluLwta(nn.Module):
    """ReLU, then the largest of each block of 2 channels kept (``[N, C, H, W]``, C even)."""

    def forward(self, h: Tensor) -> Tensor:
        r = torch.relu(h)
        v = r.view(r.shape[0], -1, 2, *r.shape[2:])
        return (v * (v == v.amax(2, keepdim=True))).view_as(r)


def net() -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(8)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), ReluLwta(), nn.Flatten(), nn.Linear(256, 3)).eval()
        with torch.no_grad():
            model[0].bias -= 0.1
    return model


def test_the_lwta_of_mostly_zero_blocks_reads_as_blocks_of_two_after_its_amax() -> None:
    with torch.no_grad():
        h = net()[0](X)
        out = ReluLwta()(h)
    r = torch.relu(h)
    fit, _ = read_gate(r, out, known_gate=True)
    assert (fit.grouping, fit.k) == ("row", 6)  # the first reading: no one winner per group
    _, _, (one, is_mask) = one_winner_read((r, out, (fit, False)))
    assert (one.grouping, one.k, one.k_spread, is_mask) == ("block-2", 1, 0, False)
    x = h.detach().requires_grad_(True)
    with InlineGates(lambda: True, lambda x, o, s: o, "smooth", 0.5) as mode:  # BPDA's watch, the gate kept
        again = ReluLwta()(x)
    assert torch.equal(again, out) and (mode.selections, mode.relaxed) == (1, 1)


def test_an_evaluation_relaxes_the_relu_lwta_instead_of_refusing() -> None:
    model = net()
    with torch.no_grad():
        y = model(X).argmax(1)
    record = evaluate_model(model, PGD_AND_BPDA, X, y, threads=1)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}
    assert record.worst("linf", 0.1).robust.accuracy <= min(r.robust.accuracy for r in record.results)
