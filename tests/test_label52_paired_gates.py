"""Which gate each selection entry of the layer probe names, in a block that builds two gates
(kwta_robust/detect_selections.py): a whole-channel top-k of channel maxima (4 of 8 channels kept) pending while the
block gates its feature map by its 2 × 2 window maxima (``h · (h == up(F.max_pool2d(h, 2, 2)))``, upsampled by
``F.interpolate`` or ``repeat_interleave``, out of place or ``h.mul_``), then keeps the top channels. The window
gate was read as the top-k's gate too, so the top-k's entry said ``gate: channel, k=16/64`` (the window gate's 1 of
4 per window), and the notes printed that; now a max-pool gate is its max-pool's alone (as BPDA pairs them) and the
top-k's entry names its own gate, ``whole-channel, k=4/8`` — what :func:`attacks.gates.infer_grouping` reads of the
keep mask. Blocks with one of the two gates, and the pool gate first then the top-k, read as before.
Conv ``[N, 1, 8, 8]`` → 8 channels → block → linear 10, seeded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.gates import infer_grouping
from attacks.pool_relax import POOL_GATE_MARK
from eval_helpers import make_record
from kwta_robust.detect import detect_layers
from kwta_robust.layer_text import detected_gates_text, inline_text

X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def up(p: Tensor, how: str) -> Tensor:
    """``p`` ``[B, C, 4, 4]`` upsampled to ``[B, C, 8, 8]`` by ``how``: ``"interpolate"`` or ``"repeat_interleave"``."""
    if how == "interpolate":
        return F.interpolate(p, scale_factor=2.0, mode="nearest")
    return p.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def keep_of(h: Tensor) -> Tensor:
    """The whole-channel top-k's mask ``[B, 8, 1, 1]``: the 4 channels of largest maximum."""
    s = h.amax(dim=(2, 3))
    return (s >= s.topk(4, dim=1).values[:, -1:])[:, :, None, None]


class Block(nn.Module):
    """``x + gates(conv(x))``; ``order``: ``"topk_pool"`` (the top-k ranked first, then the window gate, then the
    keep mask), ``"pool_topk"`` (the window gate, then the top-k of the gated map and its mask), ``"topk"`` or
    ``"pool"`` (one gate alone); ``form``: ``"out"`` or ``"mul_"`` (in place on ``h``)."""

    def __init__(self, order: str, form: str, how: str = "interpolate") -> None:
        super().__init__()
        self.conv, self.order, self.form, self.how = nn.Conv2d(8, 8, 3, padding=1), order, form, how

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        keep = keep_of(h) if self.order in ("topk_pool", "topk") else None
        if self.order != "topk":
            mask = h == up(F.max_pool2d(h, 2, 2), self.how)
            h = h * mask if self.form == "out" else h.mul_(mask)
        keep = keep_of(h) if self.order == "pool_topk" else keep
        if keep is not None:
            h = h * keep if self.form == "out" else h.mul_(keep)
        return x + h


def net(order: str, form: str, how: str = "interpolate") -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), Block(order, form, how), nn.Flatten(),
                             nn.Linear(512, 10)).eval()


def entries(model: nn.Module) -> dict[str, dict]:
    """The probe's selection entries of block ``1``, by operation."""
    detection = detect_layers(model, X, log=False)
    assert detection.layers == []  # no leaf module gates: both gates are the block's own
    return {s["op"]: s for s in detection.selections if s["modules"][-1:] == ["1"]}


def channel_gate_fit() -> tuple[str, int, int]:
    """What :func:`attacks.gates.infer_grouping` reads of the keep mask applied to the window-gated map."""
    model = net("topk_pool", "out")
    with torch.no_grad():
        h = model[1].conv(model[0](X))
        gated = h * (h == up(F.max_pool2d(h, 2, 2), "interpolate"))
        fit = infer_grouping(gated, gated * keep_of(h))
    assert fit is not None
    return fit.grouping, fit.k, fit.group_size


@pytest.mark.parametrize("how", ["interpolate", "repeat_interleave"])
@pytest.mark.parametrize("form", ["out", "mul_"])
def test_the_topk_pending_before_a_window_gate_names_its_own_gate(form: str, how: str) -> None:
    found = entries(net("topk_pool", form, how))
    assert set(found) == {"topk", "max_pool2d"}
    topk, pool = found["topk"], found["max_pool2d"]
    # before: gate "channel", k=16 of 64 (the window gate's one winner of 4 per window, per channel)
    assert (topk["gate"], topk["k"], topk["group_size"]) == ("whole-channel", 4, 8) == channel_gate_fit()
    assert "k_seen" not in topk and (topk["gates"], topk["own_gates"]) == (2, 1)
    assert pool["gate"] == POOL_GATE_MARK and pool["gates"] == 2 and "k" not in pool  # the window gate: its own
    assert inline_text(topk) == ("1 (inline): top-k gate (whole-channel, k=4/8, built from topk, 1 of the 2 gates "
                                 "per call of its forward)")
    record = make_record(detection=detect_layers(net("topk_pool", form, how), X, log=False).to_dict())
    record.model["num_kwta_layers"] = 0  # a model of your own: the tables name the gates the probe found
    assert detected_gates_text(record) == "top-k 0.5 whole-channel inline (1 found by the probe) + max-pool WTA " \
                                          "(1 found by the probe)"


@pytest.mark.parametrize("form", ["out", "mul_"])
def test_one_gate_alone_or_the_window_gate_first_read_as_before(form: str) -> None:
    first = entries(net("pool_topk", form))  # the window gate, then the top-k of the gated map: right before too
    assert (first["topk"]["gate"], first["topk"]["k"], first["topk"]["group_size"]) == ("whole-channel", 4, 8)
    assert first["max_pool2d"]["gate"] == POOL_GATE_MARK and first["topk"]["gates"] == 2
    alone = entries(net("topk", form))
    assert list(alone) == ["topk"] and "gates" not in alone["topk"]
    assert (alone["topk"]["gate"], alone["topk"]["k"], alone["topk"]["group_size"]) == ("whole-channel", 4, 8)
    pool = entries(net("pool", form))
    assert list(pool) == ["max_pool2d"] and pool["max_pool2d"]["gate"] == POOL_GATE_MARK and "gates" not in pool[
        "max_pool2d"]
