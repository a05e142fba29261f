"""An evaluation of a model whose block makes its max-pool winner-take-all gate in place on the pool's own input
(``h.mul_(h == F.max_pool2d(h, 3, 1, 1))``; ``h[h != p] = 0`` with one winner per 2 × 2 window:
tests/test_pool51_detect.py). Before, ``bpda_layers: auto`` left the block out (BPDA acted on no layer: a plain PGD
column), ``selections-outside-layers`` was critical and named the max-pool, ``bpda-no-layer`` said so, and naming
the block for BPDA was refused. Now ``auto`` acts on the block, BPDA relaxes the gate there (``wrapped inline``,
smooth and identity), no flag is critical nor about the gate, and BPDA smooth on a few samples (L∞, 20 steps; ε 0.03,
or 0.05 for the 2 × 2 windows, where at 0.03 its relaxation leaves 5 of 8 correct to PGD's 3, the out-of-place twin's
too) leaves at most as many correct as PGD of as many steps, as the twin does. Inputs ``[8, 1, 8, 8]``, seeded."""

from __future__ import annotations

import pytest
import torch

from attacks.bpda_wrap import LayerTarget
from kwta_robust.api import evaluate_model
from tests.test_inplace51_index_forms import robust_correct
from tests.test_pool51_detect import X, net

CONFIG = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}], "noise": [],
          "attacks": [{"attack": "pgd", "params": {"steps": 2}},
                      {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}},
                      {"attack": "bpda", "params": {"surrogate": "identity", "inner_params": {"steps": 2}}}],
          "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}}}
#: (form, pool) of the block: on the pool's own window, or one winner per 2 × 2 window.
MODELS = (("mul_", "own"), ("setitem", "window"))


@pytest.mark.parametrize(("how", "pool"), MODELS)
def test_auto_relaxes_the_gate_made_in_place_and_no_flag_is_critical(how: str, pool: str) -> None:
    model = net(how, pool)
    with torch.no_grad():
        y = model(X).argmax(1)
    record = evaluate_model(model, CONFIG, X, y, threads=1)
    assert [(s["op"], s.get("gate")) for s in record.detection["selections"]] == [("max_pool2d", "max-pool")]
    assert [r.bpda_layers for r in record.results if r.kind == "bpda"] == [{"1": "wrapped inline"}] * 2
    flags = record.to_dict()["diagnostics"]
    assert [f["code"] for f in flags if f["severity"] == "critical"] == []
    assert not {"selections-outside-layers", "bpda-no-layer"} & {f["code"] for f in flags}
    worst = record.worst("linf", 0.1).robust.accuracy
    assert all(worst <= r.robust.accuracy for r in record.results)


@pytest.mark.parametrize(("how", "pool", "eps"), [("mul_", "own", 0.03), ("setitem", "window", 0.05)])
def test_bpda_smooth_through_the_gate_made_in_place_attacks_at_least_as_well_as_pgd(how: str, pool: str,
                                                                                    eps: float) -> None:
    counts = []
    for form in (how, "out"):  # the gate made in place, its out-of-place twin
        model = net(form, pool)
        with torch.no_grad():
            y = model(X).argmax(1)
        counts.append(robust_correct(model, X, y, eps, layers={"1": LayerTarget("inline")}))  # before: refused
    (pgd, bpda), twin = counts
    assert bpda <= pgd and bpda < len(y), (pgd, bpda)
    assert (pgd, bpda) == twin  # the twin's gradients, so the twin's attack
