"""One screen for both screened gate reads (attacks/gate_screen.py ``screen``), and BPDA's module-gate read through it.

:func:`attacks.gate_screen.screened_read` (BPDA's inline watch, read_gate's answers) and
:func:`attacks.tied_gates.screened_tied_read` (a gate whose ties vary its count) were written apart: the first took a
0/1 mask's numbers in a second host read and dropped a mask where only a gate counts, the second took everything in
one read and read such a 0/1 tensor as a gate itself. Both now run :func:`attacks.gate_screen.screen` (the fit and
that one answer its parameters), giving their plain readings' answers — on tensors with ties too — with one host read
before the fit. :class:`attacks.bpda_wrap.ModuleBackward` read a module gate with no grouping given through the full
:func:`attacks.gates.read_gate` on every step (a ``bool``/``int`` each test); it now takes the screened read's
answer, bit for bit the same gradients.
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch
from torch import Tensor, nn

import attacks.bpda_wrap as bpda_wrap
from attacks.bpda_protocol import surrogate_backward
from attacks.gate_screen import screen, screened_read
from attacks.gates import fit_groupings, mask_as_gate, read_gate
from attacks.tied_gates import screened_tied_read, tied_fit
from test_inline_syncs_gpusync import CASES, SyncCounter, gate_reads


def _tied_cases() -> list[tuple[Tensor, Tensor]]:
    """Top-k gates written with ``>=`` on inputs rounded to halves (ties at the threshold vary the count) by value,
    magnitude and smallest value, and their 0/1 masks; a one-hot 0/1 tensor on 2,000 features (sparse enough to agree
    with its input almost everywhere)."""
    gen = torch.Generator().manual_seed(7)
    cases = []
    for shape in [(8, 40), (3, 2, 6, 6), (5, 3, 10)]:
        for _ in range(4):
            x = (torch.randn(shape, generator=gen) * 2).round() / 2
            f = x.flatten(1)
            for s in (f, f.abs(), -f):
                keep = s >= s.topk(max(1, f.shape[1] // 5), 1).values[:, -1:]
                cases += [(x, (f * keep).view(shape)), (x, keep.to(x.dtype).view(shape))]
    x = torch.randn(2, 2000, generator=gen)
    cases.append((x, (x == x.amax(1, keepdim=True)).to(x.dtype)))
    return cases


TIED = _tied_cases()


def _plain_tied(x: Tensor, out: Tensor, may_be_mask: bool) -> tuple | None:
    """attacks.tied_gates.tied_operand's plain reading of one operand."""
    gated = mask_as_gate(x, out) if may_be_mask else None
    fit = tied_fit(x, out if gated is None else gated)
    return None if fit is None else (fit, gated is not None)


def test_both_screened_reads_answer_as_their_plain_readings_ties_included() -> None:
    found = tied = differ = 0
    for x, out in CASES + tuple(TIED):
        for may_be_mask in (True, False):
            plain = _plain_tied(x, out, may_be_mask)
            assert screened_tied_read(x, out, may_be_mask) == plain
            tied += plain is not None and plain[0].k_max > plain[0].k_min
            gate = read_gate(x, out, True)
            assert screened_read(x, out, True, may_be_mask) == (None if gate and gate[1] and not may_be_mask else gate)
            found += plain is not None and gate is not None
            if x.is_floating_point() and out.is_floating_point() and out.shape == x.shape and not may_be_mask:
                # one screen, the answer for a barred 0/1 mask its parameter
                none = screen(x, out, functools.partial(fit_groupings, known_gate=True), False, "none")
                as_gate = screen(x, out, tied_fit, False, "as-gate")
                assert as_gate == plain and (none is None or not none[1])
                differ += as_gate is not None and none is None
    assert found > 200 and tied > 10 and differ > 0  # fits compared, ties met, the parameter mattered


def test_the_screen_refuses_an_unknown_answer_for_a_barred_mask() -> None:
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="barred_mask 'gate' is unknown; use one of none, as-gate"):
        screen(x, x, tied_fit, False, "gate")


def test_a_mask_is_screened_in_one_host_read_before_its_fit() -> None:
    """A dense top-k's 0/1 mask: the screen, one read for the ``"dense"`` try and one for its orderings (the mask's
    numbers took a second read before)."""
    x = torch.randn(16, 256, generator=torch.Generator().manual_seed(1))
    mask = (x >= x.topk(20, 1).values[:, -1:]).to(x.dtype)
    with SyncCounter() as counter:
        found = screened_read(x, mask, True)
    assert found is not None and found[1] and found[0].grouping == "dense"
    assert counter.calls == {"tolist": gate_reads((16, 256), "dense")}


class TopK(nn.Module):
    """``h · (h ≥ k-th largest)`` per sample, or its 0/1 mask (``mask``)."""

    def __init__(self, mask: bool = False) -> None:
        super().__init__()
        self.mask = mask

    def forward(self, h: Tensor) -> Tensor:
        keep = (h >= h.topk(12, 1).values[:, -1:]).to(h.dtype)
        return keep if self.mask else h * keep


class Masked(nn.Module):
    """A parent applying its child's 0/1 mask."""

    def __init__(self) -> None:
        super().__init__()
        self.select = TopK(mask=True)

    def forward(self, h: Tensor) -> Tensor:
        return h * self.select(h)


LAYERS = {"gate": (TopK, "1"), "mask": (Masked, "1.select"), "tanh": (nn.Tanh, "1")}


def _step(layer: str, full: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Tensor, Tensor, SyncCounter]:
    """Output and input gradient of one smooth-BPDA step on a module of ``LAYERS`` (kind ``"module"``: no grouping
    given, read at the call), the host reads of its forward; ``full``: read by :func:`attacks.gates.read_gate`."""
    make, name = LAYERS[layer]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 64), make(), nn.Linear(64, 5))
    x = torch.randn(16, 30, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    with monkeypatch.context() as patch, contextlib.ExitStack() as stack:
        if full:
            patch.setattr(bpda_wrap, "screened_read", read_gate)
        controllers = stack.enter_context(bpda_wrap.attached_backward(model, {name: bpda_wrap.LayerTarget()}))
        stack.enter_context(surrogate_backward(model, "smooth", 0.5, controllers))
        with SyncCounter() as counter:
            out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad, counter


@pytest.mark.parametrize("layer", list(LAYERS))
def test_bpda_reads_a_module_gate_in_one_host_read_before_its_fit_bit_for_bit(
        layer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate and the mask: the screen, then one read per grouping tried up to ``"dense"`` and one for its
    orderings; a tanh, no ``x · mask``: the screen alone. Output and gradient equal those of the full read."""
    out, grad, counter = _step(layer, False, monkeypatch)
    full_out, full_grad, full = _step(layer, True, monkeypatch)
    assert torch.equal(out, full_out) and torch.equal(grad, full_grad) and grad.abs().sum() > 0
    assert counter.calls == {"tolist": 1 if layer == "tanh" else gate_reads((16, 64), "dense")}
    assert full.total > counter.total
