"""A ReLU followed by a local winner-take-all (LWTA: each block of 2 channels keeps its largest unit,
``h · (v == v.amax(2, keepdim=True)).view_as(h)``) as a module of its own, twice, whose ReLUs never fire on the
clean batch (the convolutions' biases at -100): every unit of a block is 0 and ties with the largest, the mask keeps
all of them and no gate shows. The layer probe noted nothing, ``bpda_layers: auto`` acted on no layer and the
record's ``bpda-no-layer`` said only "if the model has a gate the probe missed, name it" — without the modules. The
probe now keeps the one-winner calls no gate followed (``detection.unread_winners``) and the flag names the modules
and the fix; naming them in ``bpda_layers`` then has BPDA act on them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import gates_styles as styles
from kwta_robust.detect import detect_layers
from kwta_robust.evaluate import evaluate
from test_detect_inline_gates import config, data
from wild_kwta_models import Conv, Lambda, X, seeded


def _relu_lwta(h: Tensor) -> Tensor:
    return styles.lwta_amax(torch.relu(h))


def _dead_lwta() -> nn.Module:
    def build() -> nn.Module:
        model = Conv(Lambda(_relu_lwta), Lambda(_relu_lwta))
        with torch.no_grad():
            model.c1.bias.fill_(-100.0)  # no unit fires on inputs in [0, 1]
            model.c2.bias.fill_(-100.0)
        return model

    return seeded(build)


def test_the_probe_keeps_the_unread_one_winner_calls() -> None:
    detection = detect_layers(_dead_lwta(), X, log=False)
    assert detection.layers == [] and detection.selections == [] and detection.auto_targets() == {}
    assert detection.unread_winners == [{"op": "amax", "modules": ["", "a1"], "calls": 1},
                                        {"op": "amax", "modules": ["", "a2"], "calls": 1}]
    firing = detect_layers(styles.module_net("lwta_amax"), X, log=False)  # the same LWTA where units fire: read
    assert firing.unread_winners == [] and set(firing.auto_targets()) == {"a1", "a2"}


def test_bpda_no_layer_names_the_modules_and_the_fix() -> None:
    model = _dead_lwta()
    record = evaluate(model, data(model, X), config(batch_size=16), {}, progress=False)
    flag, = [f for f in record.diagnostics if f.code == "bpda-no-layer"]
    assert flag.message.endswith(
        "the layer probe saw amax (one winner per group) in the forward of a1, a2 but read no gate after it on its "
        "clean batch: if they are winner-take-alls (an LWTA keeps each block's largest unit), their inputs there all "
        "tie (after a ReLU that never fires, every unit of a block is 0, so all are kept and no gate shows); name "
        "them (bpda_layers: [a1, a2] or --bpda-layer a1) so BPDA acts on them, and check why they never fire on "
        "these inputs (dead units, or inputs scaled otherwise than in training)")
    assert flag.evidence["unread_winners"] == record.detection["unread_winners"]
    named = evaluate(model, data(model, X), config(batch_size=16, bpda_layers=["a1", "a2"]), {}, progress=False)
    assert [r.bpda_layers for r in named.results] == [{"a1": "wrapped module", "a2": "wrapped module"}]
    assert "bpda-no-layer" not in {f.code for f in named.diagnostics}
