"""A max-pool winner-take-all built with a pooling CHILD module: ``self.pool = nn.MaxPool2d(3, 1, 1)`` and ``h · (h
== self.pool(h))`` in the parent's ``forward`` (or the max-unpool code, ``F.max_unpool2d(*self.pool(h), 2)`` with
``return_indices=True``, or with an ``nn.MaxUnpool2d`` child too). The parent has children, so the leaf probe does
not classify it, and the max-pool call ran in the child's ``forward`` (another stack), so the selection watch never
paired it with the parent's gate: no selection, no flag, and a smooth BPDA named on the parent ran unflagged. The
pooling child's max-pool now counts as a pool of the parent's ``forward`` (kwta_robust/detect_selections.py), noted,
and relaxed by BPDA's smooth surrogate exactly as the inline form (tests/test_wild_lwta_pools.py; attacks/pool_relax.py:
the pooling child's call is its caller's there too); a ReLU beside a pooling child, and max-pool children used for
downsampling, are no gate."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget
from attacks.inline_gates import InlineGates
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.evaluate import evaluate
from test_detect_inline_gates import config, data, inline_modes  # noqa: F401  (a fixture)
from test_pool_module_poolgate import blank_background
from test_wild_lwta import PGD_THEN_BPDA
from wild_kwta_models import X, seeded


class PoolMax(nn.Module):
    """``x + h · (h == pool(h))``, ``h = conv(x)``, the max-pool an ``nn.MaxPool2d(3, 1, 1)`` child."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        return x + h * (h == self.pool(h))


class Unpool(nn.Module):
    """``x + max_unpool2d(*pool(h), 2)``, the pool an ``nn.MaxPool2d(2, return_indices=True)`` child."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(2, return_indices=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        return x + F.max_unpool2d(*self.pool(h), 2, output_size=h.shape[-2:])


class UnpoolChildren(Unpool):
    """:class:`Unpool` with the unpool an ``nn.MaxUnpool2d(2)`` child too."""

    def __init__(self) -> None:
        super().__init__()
        self.unpool = nn.MaxUnpool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        return x + self.unpool(*self.pool(h), output_size=h.shape[-2:])


GATES: dict[str, Callable[[], nn.Module]] = {"pool_max": PoolMax, "max_unpool": Unpool,
                                             "max_unpool with an unpool child": UnpoolChildren}


def net(block: Callable[[], nn.Module]) -> nn.Module:
    """stem conv → ``block`` (module ``"1"``) → linear head."""
    return seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), block(), nn.Flatten(), nn.Linear(256, 3)))


@pytest.mark.parametrize("name", list(GATES))
def test_a_gate_built_with_a_pooling_child_is_a_max_pool_selection_of_the_parent(name: str) -> None:
    detection = detect_layers(net(GATES[name]), X, log=False)
    assert detection.selections == [{"op": "max_pool2d", "kind": "selection", "modules": ["", "1"], "calls": 1,
                                     "gate": "max-pool", "probed": False}]  # as the inline form
    assert detection.auto_targets() == {"1": LayerTarget("inline")}


@pytest.mark.parametrize("name", ["pool_max", "max_unpool with an unpool child"])
def test_an_evaluation_relaxes_it_with_no_flag(name: str, inline_modes: list[InlineGates]) -> None:
    model = net(GATES[name])
    record = evaluate(model, data(model, X), config(batch_size=16, attacks=PGD_THEN_BPDA), {}, progress=False)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}
    assert inline_modes and all(mode.relaxed == 1 for mode in inline_modes)  # the child's pool is the block's
    assert [f for f in run_checks(record) if f.code == "selections-outside-layers"] == []


def test_a_smooth_bpda_named_on_the_parent_relaxes_its_gate_on_a_blank_background(
        inline_modes: list[InlineGates]) -> None:
    # it ran with no flag: the smooth surrogate read the block's output as a top-k gate of its input
    model, x = net(PoolMax), blank_background()
    smooth = [PGD_THEN_BPDA[0], {"attack": "bpda", "bpda_layers": ["1"],
                                 "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}}]
    record = evaluate(model, data(model, x), config(batch_size=8, attacks=smooth), {}, progress=False)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}
    assert inline_modes and all(mode.relaxed == 1 for mode in inline_modes)


class Beside(nn.Module):
    """``x + f(h, pool)`` with an ``nn.MaxPool2d(3, 1, 1)`` child: a ReLU before, after or beside it."""

    def __init__(self, f: Callable[[Tensor, nn.Module], Tensor]) -> None:
        super().__init__()
        self.conv, self.pool, self.f = nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(3, 1, 1), f

    def forward(self, x: Tensor) -> Tensor:
        return x + self.f(self.conv(x), self.pool)


BESIDE_A_POOL: dict[str, Callable[[Tensor, nn.Module], Tensor]] = {
    "relu_of_pool": lambda h, pool: F.relu(pool(h)),
    "pool_of_relu": lambda h, pool: pool(F.relu(h)),
    "relu_beside_pool": lambda h, pool: F.relu(h) + pool(h),
}


@pytest.mark.parametrize("name", list(BESIDE_A_POOL))
def test_a_relu_beside_a_pooling_child_is_no_selection(name: str) -> None:
    model = net(lambda: Beside(BESIDE_A_POOL[name]))
    with torch.no_grad():
        h = model[1].conv(model[0](X))
    assert bool((h < 0).any()) and bool((h > 0).any())  # the ReLU zeroes some values: a gate of h · mask
    assert detect_layers(model, X, log=False).selections == []
