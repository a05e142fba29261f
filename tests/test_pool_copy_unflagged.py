"""A max-pool winner-take-all gate made in place, alone in the forward of a module with children (a block):
``h = self.conv(x); g = h.clone(); g[h != F.max_pool2d(h, 3, 1, 1)] = 0`` or ``h.mul_(h == F.max_pool2d(h, 3, 1,
1))``. The layer probe classifies no block, and its selection watch (kwta_robust/detect_selections.py) counted such a
gate only in ``gates`` beside a readable one, with no selection entry: no flag named it, ``bpda-no-layer`` advised
naming a gate the probe missed, and BPDA ran with the gate's mask cutting the gradient, unflagged. Its max-pool is
now a selection with no ``gate`` (BPDA cannot relax it: no result shows it), so ``selections-outside-layers`` names
it with the max-pool fix (surrogate: model), as a leaf module's unrelaxable pool gate, and ``auto`` leaves it out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.api import evaluate_model
from kwta_robust.detect import detect_layers, unrelaxed_pool_gates
from kwta_robust.diagnostics import run_checks
from test_detect_inline_gates import config
from test_inline_gates_twogates import built
from test_wild_lwta import PGD_THEN_BPDA
from wild_kwta_models import X

FIX = ("a winner-take-all built from a max-pool (in 1) has no smooth relaxation here and bpda_layers: auto leaves it "
       "out: name it for surrogate: model (bpda_layers: [1]) and add gradient estimation and square")


class InPlacePool(nn.Module):
    """``x + gate(conv(x))``, the max-pool gate made in place on a copy (``"copy"``) or on the pool's input."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.conv, self.form = nn.Conv2d(4, 4, 3, padding=1), form

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        if self.form == "copy":
            g = h.clone()
            g[h != F.max_pool2d(h, 3, 1, 1)] = 0
            return x + g
        h.mul_(h == F.max_pool2d(h, 3, 1, 1))
        return x + h


@pytest.mark.parametrize("form", ["copy", "input"])
def test_the_probe_notes_the_pool_of_a_gate_made_in_place_with_no_gate(form: str) -> None:
    detection = detect_layers(built(lambda: InPlacePool(form)), X, log=False)
    assert detection.selections == [{"op": "max_pool2d", "kind": "selection", "modules": ["", "1"], "calls": 1,
                                     "probed": False}]
    assert detection.auto_targets() == {} and detection.inline_gates() == []
    assert unrelaxed_pool_gates(detection.to_dict()) == set()  # no probe layer: the selection entry carries it


def test_an_evaluation_names_the_gate_with_the_max_pool_fix() -> None:
    model = built(lambda: InPlacePool("copy"))
    x = X[:8]
    with torch.no_grad():
        y = model(x).argmax(1)
    record = evaluate_model(model, config(batch_size=8, attacks=PGD_THEN_BPDA), x, y)
    assert record.detection["selections"] == [{"op": "max_pool2d", "kind": "selection", "modules": ["", "1"],
                                               "calls": 1, "probed": False}]
    assert record.result("bpda", "linf", 0.1).bpda_layers == {}
    flags = {f.code: f.message for f in run_checks(record)}
    assert flags["selections-outside-layers"].startswith(
        "the model calls max_pool2d in the forward of 1 (1 call(s) a forward), outside every layer")
    assert flags["selections-outside-layers"].endswith(FIX)
    assert flags["bpda-no-layer"].endswith(FIX)
