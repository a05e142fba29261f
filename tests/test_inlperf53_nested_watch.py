"""The cost of BPDA's inline-gate watch (attacks/inline_gates.py), pinned by structure, not by the clock.

A model whose own ``forward`` builds a top-k gate inline, around blocks that build theirs (a ResNet with a kWTA
after its stem and in every block, the function form of Xiao et al.'s ``Sparsify2D_vol``), has nested inline
targets: the model's watch stays on the torch-function mode stack while a block runs, idle there (the block is one
of its children). It used to take every call the block's watch made — the block's own calls and each tensor
operation and attribute read of the reading of its gate — as one more Python dispatch, about 11,000 per step of
a CIFAR ResNet of 8 blocks (a quarter of BPDA's CPU time there); an idle watch now sees only the calls made inside
child modules (each passed through as it was). The reading of a gate fits it grouping by grouping
(attacks/gate_fits_batched.py): the element-wise masks behind each grouping's counts are made once per pair and
regrouped, not made again for every grouping tried.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

import attacks.gate_fits_batched as batched
import gates_styles as styles
import wild_kwta_models as wild
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import attached_backward
from attacks.gates import fit_groupings
from attacks.inline_gates import InlineGates
from kwta_robust.detect import detect_layers


def volume_kwta(h: Tensor, ratio: float = 0.5) -> Tensor:
    """Xiao et al.'s ``Sparsify2D_vol`` written as a function: the ``k`` largest of each sample's volume."""
    k = int(ratio * h[0].numel())
    t = h.flatten(1).topk(k, dim=1).values[:, -1].view(-1, 1, 1, 1).expand_as(h)
    return (h >= t).to(h) * h


class Outer(nn.Module):
    """stem conv → a volume kWTA inline in this ``forward`` → a block building the gate ``style`` inline → head."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.stem, self.block = nn.Conv2d(1, 4, 3, padding=1), styles.Block(styles.STYLES[style])
        self.head = nn.Linear(256, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(volume_kwta(self.stem(x))).flatten(1))


class Calls(TorchFunctionMode):
    """Counts the torch-function calls made while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("style", ["scatter_gather", "quantile", "lwta_amax", "magnitude"])
def test_an_idle_watch_sees_no_call_of_a_nested_watch_or_its_reading(style: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = wild.seeded(lambda: Outer(style)), wild.X
    targets = detect_layers(model, x, log=False).auto_targets()
    assert targets[""].kind == targets["block"].kind == "inline"  # nested inline targets
    with Calls() as plain:  # every call one forward of the model makes
        model(x.clone().requires_grad_(True))
    seen: dict[str, int] = {"idle": 0, "active": 0}
    watch = InlineGates.__torch_function__

    def counted(self: InlineGates, func: Callable[..., Any], types: Any, args: tuple = (),
                kwargs: dict | None = None) -> Any:
        seen["active" if self.active() else "idle"] += 1
        return watch(self, func, types, args, kwargs)

    monkeypatch.setattr(InlineGates, "__torch_function__", counted)
    with contextlib.ExitStack() as stack:
        controllers = stack.enter_context(attached_backward(model, targets))
        stack.enter_context(surrogate_backward(model, "smooth", 0.5, controllers))
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xg).sum(), xg)
    assert grad.abs().sum() > 0 and seen["active"] > 0
    # the calls inside child modules, seen by the watch of each target they run under (two at most), and none of
    # a watch's own reading: before, the model's idle watch took the block's every call and reading (> 500)
    assert seen["idle"] <= 2 * plain.n


class Wheres(TorchFunctionMode):
    """Counts ``torch.where`` calls on ``numel`` elements (element-wise over a whole tensor, not per group)."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.n = numel, 0

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        self.n += func is torch.where and args[0].numel() == self.numel
        return func(*args, **(kwargs or {}))


def test_a_gate_fit_makes_the_winner_and_loser_masks_once_for_every_grouping_tried() -> None:
    """A volume top-k of ``[4, 8, 6, 6]`` is fitted under five groupings (whole-channel, row, channel, local,
    volume): its winners' and losers' masked values over the whole tensor are made once (two ``torch.where``), then
    the volume fit's two orderings (by magnitude, by smallest: two each); before, two for every grouping whose count
    was read (four: 12)."""
    h = torch.randn(4, 8, 6, 6, generator=torch.Generator().manual_seed(3))
    gate = volume_kwta(h, 0.3)
    pair = batched.PairFits(h, gate)
    with Wheres(h.numel()) as wheres:
        fit = fit_groupings(h, gate, True, pair.fit_of, batched.batched_threshold_fit)
    assert fit is not None and fit.grouping == "volume" and fit.k == int(0.3 * 8 * 6 * 6)
    assert list(pair.fits) == ["whole-channel", "row", "channel", "local", "volume"]
    assert wheres.n == 2 + 2 * 2


def _smooth_grad(model: nn.Module, x: Tensor) -> Tensor:
    targets = detect_layers(model, x, log=False).auto_targets()
    with contextlib.ExitStack() as stack:
        controllers = stack.enter_context(attached_backward(model, targets))
        stack.enter_context(surrogate_backward(model, "smooth", 0.5, controllers))
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xg).sum(), xg)
    return grad


def test_without_torchs_mode_stack_calls_the_idle_watches_stay_on_with_the_same_gradient(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle watches come off the stack through torch's private mode-stack calls; a torch lacking one keeps
    them on (the cost of before) and gives the same gradient bit for bit."""
    import attacks.inline_gates as inline

    model, x = wild.seeded(lambda: Outer("magnitude")), wild.X
    fast = _smooth_grad(model, x)
    off: list[int] = []
    real = inline._idle

    def idle(mode: object) -> bool:
        off.append(1)
        return real(mode)

    monkeypatch.setattr(inline, "_idle", idle)
    monkeypatch.setattr(inline, "_MODE_STACK_CALLS", (*inline._MODE_STACK_CALLS, "_no_such_call"))
    slow = _smooth_grad(model, x)
    assert not off  # the stack was not read: the fallback ran
    assert torch.equal(fast, slow) and fast.abs().sum() > 0
