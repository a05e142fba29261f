"""A global adaptive max-pool and one of windows in the same ``forward`` (attacks/one_winner.py, attacks/pool_gates.py).

``h · (h == F.adaptive_max_pool2d(h, 1))`` is a one-winner ``channel`` gate BPDA relaxes; ``F.max_unpool2d`` of
``F.adaptive_max_pool2d(h, 2)`` is a max-pool winner-take-all it cannot relax. Both were recorded as
``adaptive_max_pool2d``, so a block building both had one selection entry of two calls with the global gate's
``gate: channel``: the pool of windows no longer read as a max-pool (``is_pool_selection``), and
``selections-outside-layers`` gave no max-pool advice. The global one is now ``adaptive_max_pool2d(1)``: two
entries, as for ``amax`` beside ``max_pool2d``; a record written before (the global one as ``adaptive_max_pool2d``
with its gate) reads as it did.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from attacks.bpda_wrap import LayerTarget
from kwta_robust.detect import Detection, detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.evaluate import evaluate
from kwta_robust.selection_entries import is_pool_selection
from test_adaptive_pool_adaptive import Amax, net
from test_detect_inline_gates import config, data
from test_wild_lwta import PGD_THEN_BPDA
from wild_kwta_models import X


class Both(Amax):
    """``x + h · (h == adaptive_max_pool2d(h, 1)) + max_unpool2d(*adaptive_max_pool2d(h, 2, return_indices=True))``."""

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        pooled = F.max_unpool2d(*F.adaptive_max_pool2d(h, 2, return_indices=True), 4, output_size=h.shape[-2:])
        return x + h * (h == F.adaptive_max_pool2d(h, 1)) + pooled


def test_the_two_pools_of_one_forward_are_two_selections_and_an_old_record_reads_as_before() -> None:
    detection = detect_layers(net(Both), X, log=False)
    common = {"kind": "selection", "modules": ["", "1"], "calls": 1, "probed": False, "gates": 2}  # 2 gates a call
    assert detection.selections == [{"op": "adaptive_max_pool2d", **common, "gate": "max-pool"},  # pool_relax.py
                                    {"op": "adaptive_max_pool2d(1)", **common, "gate": "channel", "k": 1,
                                     "group_size": 64, "own_gates": 1}]  # its own gate of the 2 (msgs49)
    assert [is_pool_selection(s) for s in detection.selections] == [False, False]  # both gates relaxed
    assert detection.auto_targets() == {"1": LayerTarget("inline", gates=2)}
    # a record of a global pool's gate before the name (and before pool gates were counted): the same gate, no max-pool
    written = {k: v for k, v in detection.selections[1].items() if k not in ("gates", "own_gates")}
    old = Detection.from_dict({**detection.to_dict(), "selections": [{**written, "op": "adaptive_max_pool2d"}]})
    assert not is_pool_selection(old.selections[0]) and old.auto_targets() == {"1": LayerTarget("inline")}


def test_the_flag_advises_bpda_with_auto_for_both_gates() -> None:
    model = net(Both)
    record = evaluate(model, data(model, X), config(batch_size=16, attacks=PGD_THEN_BPDA[:1]), {}, progress=False)
    (flag,) = [f for f in run_checks(record) if f.code == "selections-outside-layers"]
    assert ("the model calls adaptive_max_pool2d in the forward of 1 (1 call(s) a forward); adaptive_max_pool2d(1) "
            "in the forward of 1 (1 call(s) a forward)") in flag.message
    assert "which relaxes the gate where it is built (adaptive_max_pool2d in the forward of 1)" in flag.message
    assert "has no smooth relaxation here" not in flag.message  # BPDA relaxes both (attacks/pool_relax.py)
