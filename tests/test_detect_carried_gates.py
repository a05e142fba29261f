"""A found gate's output passed through ``F.pad``, ``F.interpolate`` (``nn.Upsample``) or ``torch.cat`` with another
tensor before the next layer (kwta_robust/detect_selections.py): the constant-count watch compared such a tensor
with the found gates' outputs by count and size, so a padded, upsampled or joined copy of a gate BPDA relaxes read
as a hidden top-k and the evaluation got a false critical ``selections-outside-layers`` flag. What those operations
make of a found gate's output is now carried along with it; a hidden gate behind or beside it is still listed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.detect import detect_layers
from kwta_robust.evaluate import evaluate
from kwta_robust.layers import KWTA
from test_detect_inline_gates import X, config, data
from test_gates_fuzz import argmax_loop_mask, seeded

WIDTH = {"pad": 4 * 10 * 10, "interpolate": 4 * 16 * 16, "upsample": 4 * 16 * 16, "cat": 8 * 8 * 8}


class GateThen(nn.Module):
    """conv → our kWTA (found by the probe) → ``how`` (pad, interpolate, nn.Upsample, cat with a dense conv) →
    optionally a second kWTA → linear head; ``hidden``: a top-k without selection operations (an argmax loop)
    applied after ``how`` (or, for cat, to the dense part before the join)."""

    def __init__(self, how: str, second: bool = False, hidden: bool = False) -> None:
        super().__init__()
        self.how, self.hidden = how, hidden
        self.conv, self.gate, self.side = nn.Conv2d(1, 4, 3, padding=1), KWTA(ratio=0.25), nn.Conv2d(1, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.second = KWTA(ratio=0.25) if second else nn.Identity()
        self.head = nn.Linear(WIDTH[how], 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.gate(self.conv(x))
        if self.how == "pad":
            h = F.pad(h, (1, 1, 1, 1))
        elif self.how == "interpolate":
            h = F.interpolate(h, scale_factor=2)
        elif self.how == "upsample":
            h = self.up(h)
        else:
            side = self.side(x)
            side = side * argmax_loop_mask(side.flatten(1), 7).view_as(side) if self.hidden else side
            h = torch.cat([h, side], dim=1)
        if self.hidden and self.how != "cat":
            h = h * argmax_loop_mask(h.flatten(1), 7).view_as(h)
        return self.head(self.second(h).flatten(1))


@pytest.mark.parametrize("how", ["pad", "interpolate", "upsample", "cat"])
def test_a_padded_upsampled_or_joined_gate_output_is_no_hidden_gate(how: str) -> None:
    for second in (False, True):
        found = detect_layers(seeded(lambda: GateThen(how, second)), X)
        assert found.names("gate") == (["gate", "second"] if second else ["gate"]), (how, second)
        assert found.selections == [], (how, second)


@pytest.mark.parametrize(("how", "k", "size"), [("pad", 7, 400), ("interpolate", 7, 1024), ("cat", 64 + 7, 512)])
def test_a_hidden_gate_behind_or_beside_a_carried_output_is_still_listed(how: str, k: int, size: int) -> None:
    found = detect_layers(seeded(lambda: GateThen(how, hidden=True)), X)
    assert found.names("gate") == ["gate"]
    assert found.selections == [{"op": "constant-count", "kind": "sparsity", "modules": [""], "calls": 1, "k": k,
                                 "size": size, "tensor": "input of second", "probed": False}]


def test_an_evaluation_of_a_gate_then_pad_and_a_second_gate_has_no_false_hidden_gate_flag() -> None:
    model = seeded(lambda: GateThen("pad", second=True))
    record = evaluate(model, data(model), config(), {}, progress=False)
    assert sorted(record.result("bpda", "linf", 0.1).bpda_layers) == ["gate", "second"]
    assert record.detection["selections"] == []
    assert "selections-outside-layers" not in {f.code for f in record.diagnostics}
