"""A max-pool winner-take-all gate made in place, alone in the forward of a module with children (a block):
``h = self.conv(x); g = h.clone(); g[h != F.max_pool2d(h, 3, 1, 1)] = 0`` or ``h.mul_(h == F.max_pool2d(h, 3, 1,
1))``. The layer probe classifies no block, and its selection watch (kwta_robust/detect_selections.py) counted such a
gate only in ``gates`` beside a readable one, with no selection entry: no flag named it, ``bpda-no-layer`` advised
naming a gate the probe missed, and BPDA ran with the gate's mask cutting the gradient, unflagged. Its max-pool then
became a selection with no ``gate``, named by ``selections-outside-layers`` with the max-pool fix (surrogate: model).
Now both forms read as the pool gate (``gate: max-pool``), which ``auto`` acts on and BPDA relaxes in place
(attacks/pool_in_place.py): no flag. Zeroed by the 1-D indices of ``nonzero`` (``h[(h != p).nonzero(as_tuple=True)]
= 0``), which BPDA does not read, it is still a selection with no ``gate`` named with the fix, left out by ``auto``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget
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
    """``x + gate(conv(x))``, the max-pool gate made in place on a copy (``"copy"``) or on the pool's input (``mul_``,
    or by ``nonzero`` indices)."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.conv, self.form = nn.Conv2d(4, 4, 3, padding=1), form

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        if self.form == "copy":
            g = h.clone()
            g[h != F.max_pool2d(h, 3, 1, 1)] = 0
            return x + g
        if self.form == "nonzero":
            h[(h != F.max_pool2d(h, 3, 1, 1)).nonzero(as_tuple=True)] = 0
            return x + h
        h.mul_(h == F.max_pool2d(h, 3, 1, 1))
        return x + h


@pytest.mark.parametrize("form", ["copy", "input", "nonzero"])
def test_the_probe_reads_a_gate_made_in_place_and_notes_the_pool_of_one_by_nonzero_with_no_gate(form: str) -> None:
    detection = detect_layers(built(lambda: InPlacePool(form)), X, log=False)
    read = form != "nonzero"
    assert detection.selections == [{"op": "max_pool2d", "kind": "selection", "modules": ["", "1"], "calls": 1,
                                     **({"gate": "max-pool"} if read else {}), "probed": False}]
    assert detection.auto_targets() == ({"1": LayerTarget("inline")} if read else {})
    assert detection.inline_gates() == (["1"] if read else [])
    assert unrelaxed_pool_gates(detection.to_dict()) == set()  # no probe layer: the selection entry carries it


@pytest.mark.parametrize("form", ["copy", "input"])
def test_an_evaluation_relaxes_a_gate_made_in_place_with_no_flag(form: str) -> None:
    model, x = built(lambda: InPlacePool(form)), X[:8]
    with torch.no_grad():
        y = model(x).argmax(1)
    record = evaluate_model(model, config(batch_size=8, attacks=PGD_THEN_BPDA), x, y)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}
    codes = {f.code for f in run_checks(record)}
    assert "selections-outside-layers" not in codes and "bpda-no-layer" not in codes, codes


def test_an_evaluation_names_the_gate_by_nonzero_indices_with_the_max_pool_fix() -> None:
    model = built(lambda: InPlacePool("nonzero"))
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
