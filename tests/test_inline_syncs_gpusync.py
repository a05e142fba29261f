"""Host–device synchronisations of BPDA's inline-gate watch (attacks/inline_gates.py), counted on the CPU.

On CUDA every read of a tensor's value on the host — ``bool``/``int``/``float``/``item``/``tolist`` of a tensor, a
boolean-mask index, ``nonzero``, ``unique``, ``torch.equal``, ``.cpu()``/``.numpy()`` — waits for the device, and
so does a ``torch.tensor(…, device=…)`` (a copy from the host). :class:`SyncCounter` counts those calls (a
:class:`~torch.overrides.TorchFunctionMode` entered outside BPDA's own, so it also sees the calls
:mod:`attacks.gates` makes from inside :class:`attacks.inline_gates.InlineGates`) while one BPDA gradient step runs
on the small inline-gate models of tests/gates_styles.py and tests/wild_kwta_models.py; it does not see the calls
the autograd engine makes in a backward, so the smooth surrogate's backward is counted on its own. The screened read
(attacks/gate_screen.py, attacks/gate_fits_batched.py) must give the full read's answers: bit-for-bit gradients
against ``InlineGates(full_check=True)``, and field-for-field fits against :mod:`attacks.gates` on a few hundred
gates, masks and non-gates.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable

import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

import attacks.bpda_wrap as bpda_wrap
import gates_styles as styles
import test_inline_gates_twogates as twogates
import wild_kwta_models as wild
from attacks.bpda_protocol import surrogate_backward
from attacks.gate_fits_batched import batched_gate_fit, batched_threshold_fit
from attacks.gate_screen import screened_read
from attacks.gates import (block_groupings, candidate_groupings, gate_fit, group_rows, read_gate, relaxed_gate,
                           threshold_fit, ungroup_rows, winner_loser_extremes)
from attacks.inline_gates import InlineGates
from kwta_robust.detect import detect_layers

#: Calls that read a tensor's value on the host (a device synchronisation on CUDA).
SYNCS = frozenset({Tensor.__bool__, Tensor.__int__, Tensor.__float__, Tensor.__index__, Tensor.item, Tensor.tolist,
                   Tensor.nonzero, torch.nonzero, Tensor.unique, torch.unique, torch.equal, Tensor.equal,
                   Tensor.cpu, Tensor.numpy, Tensor.argwhere, torch.argwhere, Tensor.masked_select,
                   torch.masked_select, Tensor.unique_consecutive, torch.unique_consecutive})


def _boolean_index(index: Any) -> bool:
    """Whether a ``__getitem__`` index holds a boolean tensor (its result's size depends on the values)."""
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, Tensor) and i.dtype == torch.bool for i in items)


class SyncCounter(TorchFunctionMode):
    """Counts the calls of :data:`SYNCS`, the boolean-mask ``__getitem__`` and ``torch.tensor``/``as_tensor`` of a
    given ``device`` (on an accelerator a copy from the host, which waits for the device) made while it is active,
    by name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        copied = func in (torch.tensor, torch.as_tensor) and (kwargs or {}).get("device") is not None
        if func in SYNCS or copied or (func is Tensor.__getitem__ and len(args) > 1 and _boolean_index(args[1])):
            name = getattr(func, "__name__", str(func)) + ("(device=)" if copied else "")
            self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """All the counted calls."""
        return sum(self.calls.values())


def test_the_counter_counts_every_kind_of_host_read_once() -> None:
    t = torch.tensor([0.25, 0.75, 0.5])
    with SyncCounter() as counter:
        bool(t[0] > 0), int(t.sum()), float(t[0]), t[0].item(), t.tolist(), t.nonzero(), t[t > 0.4], t.unique()
        torch.equal(t, t), t.cpu(), t.numpy(), [0, 1][torch.tensor(1)], t[1:], torch.tensor(1.0, device=t.device)
    assert counter.calls == {name: 1 for name in ("__bool__", "__int__", "__float__", "item", "tolist", "nonzero",
                                                    "__getitem__", "unique", "equal", "cpu", "numpy", "__index__",
                                                    "tensor(device=)")}


# --- one BPDA step on the inline-gate models --------------------------------------------------------------------

MODELS: dict[str, Callable[[], nn.Module]] = {
    # the max-pool winner-take-all styles are flagged, not relaxed: BPDA reads nothing on them
    **{style: functools.partial(styles.net, style) for style in styles.STYLES
       if style not in ("pool_max", "max_unpool")},
    "inline_residual": wild.inline_residual,
    "one_gate_beside": functools.partial(twogates.built, twogates.OneGateBeside),
    "one_gate_in_place_viewed": functools.partial(twogates.built, twogates.OneGateInPlaceViewed),
    "twice": functools.partial(wild.seeded, twogates.Twice),
}


def bpda_step(model: nn.Module, x: Tensor, backward: str, full_check: bool,
              monkeypatch: pytest.MonkeyPatch) -> tuple[Tensor, Tensor, SyncCounter]:
    """One BPDA gradient step (the summed logits' input gradient) on what ``auto`` selects, its output and the
    synchronisations it made; ``full_check``: every result read by :func:`attacks.gates.read_gate` itself."""
    targets = detect_layers(model, x, log=False).auto_targets()
    with monkeypatch.context() as patch:
        patch.setattr(bpda_wrap, "InlineGates", functools.partial(InlineGates, full_check=full_check))
        xg = x.clone().requires_grad_(True)
        with contextlib.ExitStack() as stack:
            controllers = stack.enter_context(bpda_wrap.attached_backward(model, targets))
            stack.enter_context(surrogate_backward(model, backward, 0.5, controllers))
            with SyncCounter() as counter:
                out = model(xg)
                (grad,) = torch.autograd.grad(out.sum(), xg)
    return out.detach(), grad, counter


@pytest.mark.parametrize("backward", ["smooth", "identity"])
@pytest.mark.parametrize("n", [16, 1])
@pytest.mark.parametrize("name", list(MODELS))
def test_the_screened_read_relaxes_bit_for_bit_what_the_full_read_does(name: str, n: int, backward: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Same output, same input gradient (``torch.equal``: bit for bit) as with every result read in full, on the
    probe's batch and on a single sample (where one threshold serves every group: ``known_gate``)."""
    model, x = MODELS[name](), wild.X[:n]
    out, grad, screened = bpda_step(model, x, backward, False, monkeypatch)
    full_out, full_grad, full = bpda_step(model, x, backward, True, monkeypatch)
    assert torch.equal(out, full_out) and torch.equal(grad, full_grad)
    assert grad.abs().sum() > 0 and screened.total < full.total


def gate_reads(shape: tuple[int, ...], grouping: str | None) -> int:
    """Host reads of one gate's reading by design: one screen (attacks/gate_screen.py), then one per grouping tried
    in :func:`attacks.gates.infer_grouping`'s order up to the gate's and a second for the gate's orderings
    (attacks/gate_fits_batched.py); ``None``: a gate of no constant count, every grouping then one read of
    :func:`attacks.gates.threshold_fit`'s counts and one for the grouping they pass (``"dense"``). A
    ``"whole-channel"`` try (first from 3 dims) whose channels are kept in part reads once, with the count of the
    grouping after it (:class:`attacks.gate_fits_batched.PairFits`; before, a read each: one more)."""
    order = candidate_groupings(len(shape)) + block_groupings(shape)
    tried = len(order) if grouping is None else order.index(grouping) + 1  # one count read each
    shared = 1 if order[0] == "whole-channel" and tried > 1 else 0  # the whole-channel try and the next count
    return 1 + tried - shared + (2 if grouping is None else 1)


#: Per style, the host reads of one BPDA step by design: per result made after the selection and shaped like the
#: ranked tensor, one per operand it may gate (a result of no gate: one ``tolist``, nothing more), and the gate's
#: reading (:func:`gate_reads`). ``zeros_like(f)`` is read against ``f`` as its operand and as the ranked tensor
#: (2); ``(f >= t).float()`` against the ranked ``f`` (a 0/1 mask, where only a gate counts: 1); the quantile gate
#: has no constant count; a one-hot gate is ``"local"``. A pair is screened once
#: (:class:`attacks.gate_screen.ScreenMemo`): ``zeros_like(f)`` against ``f`` as its operand and as the ranked
#: tensor is one pair, read once, and a result the plain reading found no gate in is read again for a gate whose
#: count varies by ties (:func:`attacks.tied_gates.tied_operand`) from the memo (before: a ``tolist`` each time, 7,
#: 7, 7 and 5 reads).
#: The full read made 41, 88, 88, 88, 21, 21 and 29.
STEP_READS = {
    "quantile": gate_reads((16, 256), None),
    "scatter_gather": 1 + gate_reads((16, 256), "dense"),
    "scatter_gather_": 1 + gate_reads((16, 256), "dense"),
    "scatter_values_": 1 + gate_reads((16, 256), "dense"),
    "one_hot": gate_reads((16, 4, 8, 8), "local"),
    "one_hot_min": gate_reads((16, 4, 8, 8), "local"),
    "inline_residual": 1 + gate_reads((16, 256), "dense"),
}


@pytest.mark.parametrize("name", list(STEP_READS))
def test_a_bpda_step_reads_the_device_only_in_the_one_read_per_check_by_design(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every host read is one ``tolist`` of stacked numbers, or one ``item`` (no ``bool``/``int``/``unique``/mask
    index each taking one number), at most :data:`STEP_READS` of them."""
    model = MODELS[name]()
    _, _, counter = bpda_step(model, wild.X, "smooth", False, monkeypatch)
    assert set(counter.calls) <= {"tolist", "item"}
    assert counter.total <= STEP_READS[name]
    with SyncCounter() as plain:  # the model itself reads nothing: every read is BPDA's
        model(wild.X.clone().requires_grad_(True)).sum().backward()
    assert plain.total == 0


# --- the screened and batched reads give the plain reads' answers -----------------------------------------------
def _cases() -> tuple[tuple[Tensor, Tensor], ...]:
    """``(x, out)`` pairs: top-k gates of every grouping (by value, magnitude, smallest, with ties and zeros), their
    0/1 masks, whole-channel gates, LWTA blocks, quantile thresholds, ReLUs, all-zero outputs, ``x`` itself, noise,
    NaNs, half precision, one sample."""
    gen = torch.Generator().manual_seed(11)
    cases: list[tuple[Tensor, Tensor]] = []
    for shape in [(6, 12), (1, 8), (3, 4, 5, 5), (2, 6, 7), (4, 1, 3, 3), (2, 4, 2, 6)]:
        x = torch.randn(shape, generator=gen)
        tied = (x * 2).round() / 2  # ties and exact zeros
        for base in (x, tied, x.abs(), -x):
            for grouping in candidate_groupings(len(shape)) + block_groupings(shape):
                if grouping == "whole-channel":
                    stat = base.flatten(2).amax(dim=2)
                    keep = stat >= stat.topk(max(1, stat.shape[1] // 2), dim=1).values[:, -1:]
                    gate = base * keep.view(keep.shape + (1,) * (base.ndim - 2))
                else:
                    rows = group_rows(base, grouping)
                    k = max(1, rows.shape[1] // 3)
                    for score in (rows, rows.abs(), -rows):
                        keep = score >= score.topk(k, dim=1).values[:, -1:]
                        cases.append((base, ungroup_rows(rows * keep, base, grouping)))
                        cases.append((base, ungroup_rows(keep.to(base.dtype), base, grouping)))
                    q = torch.quantile(rows, 1 - k / rows.shape[1], dim=1, keepdim=True)
                    gate = ungroup_rows(rows * (rows >= q), base, grouping)
                cases.append((base, gate))
            cases += [(base, torch.relu(base)), (base, torch.zeros_like(base)), (base, base.clone()),
                      (base, torch.randn(shape, generator=gen)), (base, (base > 0).to(base.dtype)),
                      (base, torch.ones_like(base))]
        nan = x.clone().flatten()
        nan[0] = float("nan")
        cases += [(nan.view(shape), torch.relu(nan).view(shape)), (x.half(), torch.relu(x).half())]
    return tuple(cases)


CASES = _cases()


def test_the_screened_read_answers_as_read_gate_on_every_case() -> None:
    found = 0
    for x, out in CASES:
        for known_gate in (False, True):
            plain = read_gate(x, out, known_gate)
            assert screened_read(x, out, known_gate) == plain
            assert screened_read(x, out, known_gate, may_be_mask=False) == (
                None if plain is not None and plain[1] else plain)
            found += plain is not None
    assert found > len(CASES) // 2  # most cases are gates or masks: the fits were compared, not only None


def test_the_batched_fits_answer_as_the_plain_ones_field_for_field() -> None:
    constant = spread = whole = 0
    for x, out in CASES:
        if not x.is_floating_point() or x.ndim < 2:
            continue
        for grouping in candidate_groupings(x.ndim) + block_groupings(x.shape):
            plain = gate_fit(x, out, grouping, only_constant=True)
            assert batched_gate_fit(x, out, grouping) == plain, grouping
            constant += plain is not None
            whole += plain is not None and plain.statistic is not None
        for known_gate in (False, True):
            plain = threshold_fit(x, out, known_gate)
            assert batched_threshold_fit(x, out, known_gate) == plain
            spread += plain is not None
    assert constant > 100 and whole > 0 and spread > 0  # every kind of fit was met, not only None


def test_the_extremes_with_python_infinities_equal_those_with_a_tensor_of_them() -> None:
    """:func:`attacks.gates.winner_loser_extremes` took its infinities from ``torch.tensor(inf, device=…)`` (a copy
    from the host on every call on an accelerator); with Python numbers the values and the gradient are the same
    bit for bit (float32 with ties, NaN and rows with no winner or no loser; float16)."""
    gen = torch.Generator().manual_seed(5)
    for dtype in (torch.float32, torch.float16):
        rows = (torch.randn(9, 7, generator=gen) * 2).round().to(dtype).requires_grad_(True)
        with torch.no_grad():
            rows[0, 0] = float("nan")
        win = torch.rand(9, 7, generator=gen) < 0.4
        win[1], win[2] = True, False
        inf = torch.tensor(float("inf"), dtype=dtype)
        reference = torch.where(win, rows, inf).amin(dim=1), torch.where(win, -inf, rows).amax(dim=1)
        extremes = winner_loser_extremes(rows, win)
        for got, want in zip(extremes, reference):
            assert got.dtype == want.dtype and _same(got, want)
        grads = [torch.autograd.grad(sum(v.nan_to_num(0, 0, 0).sum() for v in pair), rows)[0]
                 for pair in (extremes, reference)]
        assert _same(grads[0], grads[1]) and grads[0].nan_to_num().abs().sum() > 0


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal bit for bit where not NaN, NaN at the same places."""
    return torch.equal(a.nan_to_num(), b.nan_to_num()) and torch.equal(a.isnan(), b.isnan())


@pytest.mark.parametrize("grouping, score", [("dense", "value"), ("local", "smallest"), ("channel", "magnitude"),
                                             ("whole-channel", "max"), ("block-2", "value")])
def test_the_smooth_surrogates_backward_reads_nothing_from_the_device(grouping: str, score: str) -> None:
    """What :class:`attacks.bpda_wrap._SurrogateGradient` runs in the backward of every relaxed gate on every step
    (:func:`attacks.gates.relaxed_gate` and its VJP) makes no host read: the counter above does not see the autograd
    engine's calls, so the surrogate is run here directly (before: one ``torch.tensor(inf, device=…)`` each)."""
    x = torch.randn(4, 4, 3, 3, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    out = x.detach() * (x.detach() > 0.3)
    with SyncCounter() as counter:
        relaxed = relaxed_gate(x, out, grouping, 0.5, score)
        (grad,) = torch.autograd.grad(relaxed.sum(), x)
    assert counter.calls == {} and grad.abs().sum() > 0
