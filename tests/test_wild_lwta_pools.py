"""Spatial winner-take-all built from a max-pool (tests/gates_styles.py): ``h · (h == F.max_pool2d(h, 3, 1, 1))``
(each unit passes where it is the largest of the window around it) and the max-unpool sparse code
``F.max_unpool2d(*F.max_pool2d(h, 2, return_indices=True), 2)`` (one winner per 2 × 2 window), inline in a residual
block's ``forward``. Their mask is piecewise constant in ``h``, as a kWTA's, but no grouping of attacks/gates.py
reads them (a count of winners that varies with the input; groups that are spatial windows), so BPDA has no
relaxation of them. They called no operation the layer probe watched: no selection, no flag but ``bpda-no-layer``, a
PGD number with nothing saying a gate cut its gradient. A max-pool followed in the same ``forward`` by such a gate is
now noted (attacks/pool_gates.py, kwta_robust/detect_selections.py) as building a gate (``gate: max-pool``), which
``auto`` acts on and BPDA's smooth surrogate relaxes (attacks/pool_relax.py), and ``selections-outside-layers`` names
it, critical, where no BPDA attack did; a ReLU before or after a max-pool is no such gate."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gates_styles as styles
from attacks.bpda_wrap import LayerTarget
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.evaluate import evaluate
from test_detect_inline_gates import config, data
from test_wild_lwta import PGD_THEN_BPDA
from wild_kwta_models import X, seeded

POOLS = ["pool_max", "max_unpool"]


def advice(gate: str) -> str:
    """The flag's last advice for a max-pool gate built in the module ``gate``: name it for the model surrogate."""
    return (f"a winner-take-all built from a max-pool (in {gate}) has no smooth relaxation here and bpda_layers: auto "
            f"leaves it out: name it for surrogate: model (bpda_layers: [{gate}]) and add gradient estimation and "
            "square")


ADVICE = advice("1")


@pytest.mark.parametrize("style", POOLS)
def test_a_max_pool_winner_take_all_is_noted_as_a_selection_building_a_max_pool_gate(style: str) -> None:
    detection = detect_layers(styles.net(style), X, log=False)
    assert detection.selections == [{"op": "max_pool2d", "kind": "selection", "modules": ["", "1"], "calls": 1,
                                     "gate": "max-pool", "probed": False}]
    assert detection.auto_targets() == {"1": LayerTarget("inline")}  # BPDA relaxes the gate where it is built


@pytest.mark.parametrize("style", POOLS)
def test_an_evaluation_without_bpda_flags_it_critical_and_says_auto_relaxes_it(style: str) -> None:
    model = styles.net(style)
    record = evaluate(model, data(model, X), config(batch_size=16, attacks=PGD_THEN_BPDA[:1]), {}, progress=False)
    (flag,) = [f for f in run_checks(record) if f.code == "selections-outside-layers"]
    assert flag.severity == "critical"
    assert "the model calls max_pool2d in the forward of 1 (1 call(s) a forward)" in flag.message
    assert flag.message.endswith("; add bpda with bpda_layers: auto (surrogate smooth, the default, or identity), "
                                 "which relaxes the gate where it is built (max_pool2d in the forward of 1), the "
                                 "model's own forward included")
    assert ADVICE not in flag.message


BESIDE_A_POOL: dict[str, Callable[[Tensor], Tensor]] = {
    "relu_of_pool": lambda h: F.relu(F.max_pool2d(h, 3, 1, 1)),
    "pool_of_relu": lambda h: F.max_pool2d(F.relu(h), 3, 1, 1),
    "relu_of_flat_pool": lambda h: F.relu(F.max_pool2d(h, 3, 1, 1).flatten(1)).view_as(h),
    "relu_beside_pool": lambda h: F.relu(h) + F.max_pool2d(h, 3, 1, 1),
}


@pytest.mark.parametrize("name", list(BESIDE_A_POOL))
def test_a_relu_before_after_or_beside_a_max_pool_is_no_selection(name: str) -> None:
    model = seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), styles.Block(BESIDE_A_POOL[name]),
                                         nn.Flatten(), nn.Linear(256, 3)))
    with torch.no_grad():
        h = model[1].conv(model[0](X))
    assert bool((h < 0).any()) and bool((h > 0).any())  # the ReLU zeroes some values: a gate of h · mask
    assert detect_layers(model, X, log=False).selections == []
