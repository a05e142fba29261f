"""Spatial winner-take-all built from a max-pool, written as a module of its own (a leaf called with the tensor): ``h ·
(h == F.max_pool2d(h, 3, 1, 1))``, the max-unpool sparse code, their 0/1 mask applied by the parent, and the gate
made in place (``h[h < p] = 0``, or by ``nonzero`` indices). The layer probe read such a module as a top-k gate of a
rule it does not follow (``volume`` on images with a blank background, ``row`` on MNIST, ``channel`` for the
max-unpool form: one winner per 2 × 2 window is a constant quarter of each channel) and BPDA relaxed it on that rule,
with no flag; or it found nothing and the flag advised naming the module in ``bpda_layers`` (BPDA then reads it at
each call as a top-k). It is now read as what it is (kind ``max-pool-gate``, kwta_robust/detect.py;
attacks/pool_gates.py ``PoolCalls``): where its forward returns the gate, ``auto`` acts on it and BPDA's smooth
surrogate relaxes it as what it is (tests/test_pool_relax.py); its 0/1 mask returned or the gate made in place by
``nonzero`` indices is left alone by ``auto`` and named by ``selections-outside-layers`` with the fix (``h[h < p] =
0`` on the pool's input is read and relaxed now: attacks/pool_in_place.py); an ``nn.MaxPool2d`` (fewer elements out
than in, or not its input times a mask) and a real top-k gate read as before."""

from __future__ import annotations

import logging
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gates_styles as styles
from attacks.bpda_wrap import LayerTarget
from kwta_robust.detect import POOL_GATE, detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from test_detect_inline_gates import config, data
from test_wild_lwta import PGD_THEN_BPDA
from test_wild_lwta_pools import advice
from wild_kwta_models import X, Sparsify2D, seeded


class Gate(nn.Module):
    """A leaf module applying one of tests/gates_styles.py's max-pool gates (``pool_max``, ``max_unpool``)."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style

    def forward(self, h: Tensor) -> Tensor:
        return styles.STYLES[self.style](h)


class MaskOf(nn.Module):
    """Returns the 0/1 mask of ``pool_max``, which its parent applies."""

    def forward(self, h: Tensor) -> Tensor:
        return (h == F.max_pool2d(h, 3, 1, 1)).to(h)


class InPlace(nn.Module):
    """``pool_max`` made in place on a copy of the module's input, the pool's own input: ``h[h < p] = 0`` (read and
    relaxed by BPDA: attacks/pool_in_place.py), or by the 1-D indices of ``nonzero`` (no result is the gate)."""

    def __init__(self, how: str = "setitem") -> None:
        super().__init__()
        self.how = how

    def forward(self, h: Tensor) -> Tensor:
        h = h.clone()
        if self.how == "setitem":
            h[h < F.max_pool2d(h, 3, 1, 1)] = 0
        else:
            h[(h < F.max_pool2d(h, 3, 1, 1)).nonzero(as_tuple=True)] = 0
        return h


class Residual(nn.Module):
    """``x + gate(conv(x))``, the gate a child module (``1.gate``)."""

    def __init__(self, gate: nn.Module) -> None:
        super().__init__()
        self.conv, self.gate = nn.Conv2d(4, 4, 3, padding=1), gate

    def forward(self, x: Tensor) -> Tensor:
        return x + self.gate(self.conv(x))


class AppliesMask(nn.Module):
    """``x + h · mask(h)`` with ``h = conv(x)`` and the mask a child module (``1.mask``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.mask = nn.Conv2d(4, 4, 3, padding=1), MaskOf()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        return x + h * self.mask(h)


def sequential(gate: nn.Module) -> nn.Module:
    """stem conv → the gate module (``"1"``) → linear head."""
    return seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), gate, nn.Flatten(), nn.Linear(256, 3)))


def residual(gate: nn.Module) -> nn.Module:
    """stem conv → :class:`Residual` around the gate module (``"1.gate"``) → linear head."""
    return seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Residual(gate), nn.Flatten(),
                                        nn.Linear(256, 3)))


def blank_background(seed: int = 0) -> Tensor:
    """``[8, 1, 8, 8]``: zeros but a random 4 × 4 patch in the middle (a digit on a blank background)."""
    x = torch.zeros(8, 1, 8, 8)
    x[:, :, 2:6, 2:6] = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return x


MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "pool_max": (lambda: sequential(Gate("pool_max")), "1"),
    "max_unpool": (lambda: sequential(Gate("max_unpool")), "1"),
    "pool_max in a residual block": (lambda: residual(Gate("pool_max")), "1.gate"),
    "max_unpool in a residual block": (lambda: residual(Gate("max_unpool")), "1.gate"),
    "made in place": (lambda: residual(InPlace()), "1.gate"),
    "made in place by nonzero indices": (lambda: residual(InPlace("nonzero")), "1.gate"),
    "its mask, applied by the parent": (lambda: seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), AppliesMask(), nn.Flatten(), nn.Linear(256, 3))), "1.mask"),
}


#: The forms with no result BPDA reads as the gate: left out by auto, refused for the smooth surrogate.
UNREADABLE = ("made in place by nonzero indices", "its mask, applied by the parent")


@pytest.mark.parametrize("name", list(MODELS))
def test_a_max_pool_gate_module_is_read_as_one_and_relaxed_where_it_returns_the_gate(name: str) -> None:
    build, gate = MODELS[name]
    detection = detect_layers(build(), X, log=False)
    (finding,) = detection.layers
    assert (finding.name, finding.kinds, finding.grouping) == (gate, [POOL_GATE], None)
    assert finding.evidence["selection"] == "max-pool winner-take-all"
    assert finding.evidence["pools"] == ["max_pool2d"]
    assert finding.evidence.get("output") == ("mask" if "mask" in name else None)
    readable = name not in UNREADABLE  # a result of its forward is the gate: attacks/pool_relax.py relaxes it
    # nothing BPDA would relax as a top-k; the gate itself as an inline one (its own forward's)
    assert detection.auto_targets() == ({gate: LayerTarget("inline")} if readable else {})
    parents = gate.split(".")[:-1]
    assert detection.selections == [{"op": "max_pool2d", "kind": "selection", "modules": ["", *parents, gate],
                                     "calls": 1, **({"gate": "max-pool"} if readable else {}), "probed": True,
                                     "keeps_shape": True}]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_a_blank_background_it_is_not_read_as_a_top_k_of_the_volume(seed: int) -> None:
    # the old probe read this gate as a top-k over C·H·W per sample (the blank background's ties kept whole)
    detection = detect_layers(sequential(Gate("pool_max")), blank_background(seed), log=False)
    assert [(f.name, f.kinds, f.grouping) for f in detection.layers] == [("1", [POOL_GATE], None)]
    assert detection.auto_targets() == {"1": LayerTarget("inline")}  # relaxed as what it is


def test_a_max_pool_module_and_a_top_k_gate_beside_it_read_as_before() -> None:
    model = seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), Sparsify2D(), nn.MaxPool2d(3, 1, 1), Gate("pool_max"), nn.MaxPool2d(2),
        nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)))
    detection = detect_layers(model, X, log=False)
    assert [(f.name, f.kinds, f.grouping) for f in detection.layers] == [
        ("1", ["gate"], "volume"), ("3", [POOL_GATE], None)]
    assert detection.layers[0].evidence["k"] == int(0.2 * 4 * 8 * 8)  # Sparsify2D's k = ratio · C·H·W
    assert detection.auto_targets() == {"1": detection.target("1"), "3": LayerTarget("inline")}


@pytest.mark.parametrize("name", UNREADABLE)
def test_an_evaluation_flags_it_critical_with_the_fix_and_no_advice_to_name_it(name: str) -> None:
    build, gate = MODELS[name]
    model = build()
    record = evaluate(model, data(model, X), config(batch_size=16, attacks=PGD_THEN_BPDA), {}, progress=False)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {}  # BPDA relaxed no misread top-k
    (flag,) = [f for f in run_checks(record) if f.code == "selections-outside-layers"]
    assert flag.severity == "critical"
    assert f"in the forward of {gate} (1 call(s) a forward), which the layer probe read as a max-pool " \
        "winner-take-all gate BPDA cannot relax" in flag.message
    assert "bpda_layers: [auto" not in flag.message  # naming it for smooth would relax it as a top-k
    assert flag.message.endswith("; " + advice(gate))


def test_the_probe_logs_a_warning_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kwta_robust.detect"):
        detect_layers(residual(InPlace("nonzero")), X)
    assert [m for m in caplog.messages if "1.gate" in m] == [
        "layer 1.gate (InPlace) is a winner-take-all built from a max-pool in a form BPDA cannot relax (its 0/1 mask "
        "returned, or made in place, not as h.mul_(h == p) or h[h != p] = 0), which bpda_layers: auto leaves out: "
        "name it for surrogate: model "
        "(bpda_layers: [1.gate]) and add gradient estimation and square"]  # not also "showed no top-k gate"


def test_the_probe_logs_that_bpda_relaxes_a_gate_it_returns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kwta_robust.detect"):
        detect_layers(residual(Gate("max_unpool")), X)
    assert [r.getMessage() for r in caplog.records if "1.gate" in r.getMessage() and r.levelno > logging.INFO] == []
    assert caplog.messages[-1] == (
        "the model builds a winner-take-all gate from a max-pool: max_pool2d in the forward of 1.gate; BPDA's smooth "
        "surrogate relaxes it where it acts on that module (bpda_layers: auto does)")


def named(surrogate: str) -> list[dict]:
    """PGD, then BPDA with ``surrogate`` on the module ``1`` named in its ``bpda_layers``."""
    return [PGD_THEN_BPDA[0], {"attack": "bpda", "bpda_layers": ["1"],
                               "params": {"surrogate": surrogate, "inner_params": {"steps": 2}}}]


def test_naming_it_for_the_smooth_surrogate_is_refused_in_one_line_where_no_result_is_the_gate() -> None:
    # the smooth surrogate read it at each call as a top-k of C·H·W (volume) and relaxed it on that, with no flag
    model, x = sequential(InPlace("nonzero")), blank_background()
    with pytest.raises(ConfigError) as caught:
        evaluate(model, data(model, x), config(batch_size=8, attacks=named("smooth")), {}, progress=False)
    assert str(caught.value) == (
        "attacks[bpda].bpda_layers: 1 is a winner-take-all built from a max-pool (layer probe: max-pool-gate) in a "
        "form the smooth surrogate cannot relax (its 0/1 mask returned for the parent to apply, or made in place, "
        "not as h.mul_(h == p) or h[h != p] = 0), so it would relax it as a top-k gate, a rule it does not follow: "
        "build the gate as a result (h * (h == F.max_pool2d(...)), F.max_unpool2d) or in one of those forms, leave "
        "it out, or use surrogate: model (or identity: straight-through), and add gradient estimation and square")
    record = evaluate(model, data(model, x), config(batch_size=8, attacks=named("identity")), {}, progress=False)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped module"}  # straight-through: allowed
    for model in (sequential(Gate("pool_max")), sequential(InPlace())):  # its gate a result or h[h < p] = 0
        record = evaluate(model, data(model, x), config(batch_size=8, attacks=named("smooth")), {}, progress=False)
        assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}  # relaxed as what it is
