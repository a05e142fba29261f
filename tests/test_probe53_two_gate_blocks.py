"""The layer probe's count and labels for blocks that build two gates (kwta_robust/detect_selections.py,
kwta_robust/mask_uses.py).

(1) A block that gates ``h`` by its 2 × 2 window maxima (``g = h · (h == p)``) and then applies a flattened top-k's
mask to ``g`` flattened (``g.flatten(1) · (hf ≥ kth)``, ``hf = h.flatten(1)``: tests/test_cut52_flat_view.py): the
probe read the view ``g.flatten(1)`` as the top-k's gate of ``hf`` and the mask's product as a third gate, so
``bpda_layers: auto`` gave ``gates=3`` and BPDA, which relaxes 2 (a layout call of a gate it relaxed is that gate:
``attacks.inline_gates.LAYOUTS``), refused a block it relaxes. Now the probe reads layouts as BPDA does: 2 gates, and
BPDA under the auto target gives the in-place twin's gradient.
(2) A second gate written by indices after both selections (``h[rows, idx2] = 0`` with ``idx2`` a top-k's losers, or
``h[(h < t2).nonzero(as_tuple=True)] = 0``) was not counted: the probe said one gate, BPDA relaxed the first and the
second's indices cut the gradient with no refusal (summed |grad| identity 50.36, smooth 48.80, against 53.36 and
50.92 for the twin that builds each gate after its selection). Now it counts as one gate more and BPDA refuses.
(3) Where a window gate comes before the top-k's own mask (``m = hf ≥ kth`` made first, then ``h.mul_(h == p)``,
then ``hf.mul_(m)``; or ``g.flatten(1) · m``), the top-k's entry read ``block-2, k=1/2`` (the mask's product read on
the window-gated operand, one non-zero per pair left by the window gate); now the mask is read on the values the
top-k ranked: ``dense, k=200/512``.
(4) A volume top-k and a local (per-position, across channels) top-k of one map, both first, then both gates, gave
one ``topk`` entry (``volume, k=128/256``, ``k_seen`` naming both counts); now each has its own entry with its
grouping and k (kwta_robust.selection_entries.split_by_call; gates of one grouping and other k keep one entry,
each k/N in ``k_seen``, as before).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.base import AttackConfigError
from attacks.bpda_wrap import LayerTarget
from kwta_robust.detect import detect_layers
from kwta_robust.layer_text import inline_text
from tests import test_cut52_flat_view as cut52
from tests.test_inplace51_index_forms import bpda_gradient
from tests.test_pair52_mask_uses import REFUSAL, X, gradient

K = 128
TWO = LayerTarget("inline", gates=2)


def entries(model: nn.Module, x: Tensor) -> tuple[dict[str, dict], dict]:
    """The probe's selection entries of block ``"1"`` by operation, and ``auto_targets()``."""
    detection = detect_layers(model, x, log=False)
    return {s["op"]: s for s in detection.selections if s["modules"][-1:] == ["1"]}, detection.auto_targets()


@pytest.mark.parametrize("how", ["flatten", "reshape", "view"])
def test_a_view_of_the_window_gated_map_is_no_third_gate(how: str) -> None:
    found, targets = entries(cut52.net(how), cut52.X)
    # before: gates 3 on both entries, the topk's own_gates 2 and auto LayerTarget("inline", gates=3)
    assert (found["max_pool2d"]["gates"], found["topk"]["gates"], found["topk"]["own_gates"]) == (2, 2, 1)
    assert targets == {"1": TWO} == entries(cut52.net("mul_"), cut52.X)[1]  # the in-place twin's


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_bpda_under_the_auto_target_gives_the_in_place_twins_gradient(backward: str) -> None:
    (target,) = entries(cut52.net("flatten"), cut52.X)[1].values()
    model = cut52.net("flatten")
    with torch.no_grad():
        plain = model(cut52.X)
    out, grad = bpda_gradient(model, backward, target, cut52.X)  # before: refused (3 gates, 2 relaxed)
    twin_out, twin_grad = bpda_gradient(cut52.net("mul_"), backward, TWO, cut52.X)
    assert torch.equal(out, plain) and torch.equal(out, twin_out)
    torch.testing.assert_close(grad, twin_grad, rtol=1e-5, atol=1e-7)


class Block(nn.Module):
    """``x + gates(conv(x))``: two top-k selections of two maps (``"idx"``, ``"nonzero"``, ``"bool"``: both first,
    the second gate written by indices or a boolean mask) or of one (``"same_idx"``), or ``"twin"``: each gate after its
    selection (read and relaxed as before)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.c1, self.c2, self.how = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), how

    def forward(self, x: Tensor) -> Tensor:
        f1, f2, how = self.c1(x).flatten(1), self.c2(x).flatten(1), self.how
        rows = torch.arange(f1.shape[0])[:, None]
        t1 = f1.topk(K, dim=1).values[:, -1:]
        if how == "twin":
            g = f1 * (f1 >= t1)
            t2 = f2.topk(K, dim=1).values[:, -1:]
            f2 = f2.clone()
            f2[f2 < t2] = 0
            return x + (g + f2).view_as(x)
        if how == "same_idx":  # one map: its 128 largest, then its 192 smallest zeroed by index
            idx = f1.topk(f1.shape[1] - 64, dim=1, largest=False).indices
            g = f1 * (f1 >= t1)
            g[rows, idx] = 0
            return x + g.view_as(x)
        idx2 = f2.topk(f2.shape[1] - K, dim=1, largest=False).indices
        t2 = f2.topk(K, dim=1).values[:, -1:]
        g = f1 * (f1 >= t1)
        f2 = f2.clone()
        if how == "idx":
            f2[rows, idx2] = 0
        elif how == "nonzero":
            f2[(f2 < t2).nonzero(as_tuple=True)] = 0
        else:  # "bool": counted before too
            f2[f2 < t2] = 0
        return x + (g + f2).view_as(x)


def net(how: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Block(how), nn.Flatten(), nn.Linear(256, 10)).eval()


@pytest.mark.parametrize("how", ["idx", "nonzero", "same_idx"])
def test_a_second_gate_by_indices_after_both_selections_is_counted_and_bpda_refuses(how: str) -> None:
    detection = detect_layers(net(how), X, log=False)
    # before: no gates (one gate read), and for "same_idx" no k_seen (its 64 kept unseen)
    assert [(s["gate"], s["k"], s["gates"], s.get("k_seen")) for s in detection.selections] == [
        ("dense", K, 2, [[K, 256], [64, 256]] if how == "same_idx" else None)]
    targets = detection.auto_targets()
    assert targets == {"1": TWO}  # before: LayerTarget("inline"), and BPDA ran with the second gate's cut
    for backward in ("identity", "smooth"):
        with pytest.raises(AttackConfigError) as refused:
            gradient(net(how), targets["1"], backward)
        assert str(refused.value).startswith(REFUSAL), how


def test_what_bpda_ran_before_was_not_the_twins_gradient() -> None:
    """The twin (each gate after its selection) reads 2 gates and runs, as before; the target the probe gave "idx"
    before, ``LayerTarget("inline")``, ran with the second gate's indices cutting the gradient."""
    assert entries(net("twin"), X)[1] == {"1": TWO} == entries(net("idx"), X)[1]  # before: "idx" not TWO
    out, grad = gradient(net("twin"), TWO, "identity")
    cut_out, cut = gradient(net("idx"), LayerTarget("inline"), "identity")
    torch.testing.assert_close(out, cut_out)  # the same model
    assert not torch.allclose(grad, cut, rtol=1e-3, atol=1e-5)  # 53.36 summed |grad| against 50.36


class WindowFirst(cut52.Block):
    """A sample top-k (200 of 512) and a 2 × 2 window gate in one forward; ``how``: ``"mask_first_mul_"`` (the top-k's
    mask made, then the window gate in place, then the mask in place), ``"mask_first_out"`` (the mask applied out of
    place), ``"flatten"`` (cut52's block: the window gate out of place, the mask applied to its flattened view),
    ``"alone"`` (the top-k gate alone), ``"mul_"`` (cut52's in-place twin: the mask made of the
    window-gated map, no constant count of the values ranked, read as before)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.how in ("flatten", "mul_"):
            return super().forward(x)
        h = self.conv(x)
        hf = h.flatten(1)
        kth = hf.topk(200, dim=1).values[:, -1:]
        if self.how == "alone":
            return x + (hf * (hf >= kth)).view_as(h)
        m = hf >= kth
        h.mul_(h == cut52._pool(h))
        if self.how == "mask_first_mul_":
            hf.mul_(m)
            return x + h
        return x + (hf * m).view_as(h)


def window_net(how: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), WindowFirst(how), nn.Flatten(),
                             nn.Linear(512, 10)).eval()


@pytest.mark.parametrize("how", ["mask_first_mul_", "mask_first_out", "flatten"])
def test_the_topk_after_a_window_gate_is_labelled_by_its_own_mask(how: str) -> None:
    found, targets = entries(window_net(how), cut52.X)
    topk = found["topk"]
    # before: block-2, k=1/2 (and for "flatten" dense 128/512 with k_seen, 3 gates)
    assert (topk["gate"], topk["k"], topk["group_size"], "k_seen" in topk) == ("dense", 200, 512, False)
    assert (topk["gates"], topk["own_gates"], targets) == (2, 1, {"1": TWO})
    assert inline_text(topk) == ("1 (inline): top-k gate (dense, k=200/512, built from topk, 1 of the 2 gates per "
                                 "call of its forward)")
    alone = entries(window_net("alone"), cut52.X)[0]["topk"]
    assert (alone["gate"], alone["k"], alone["group_size"], "gates" in alone) == ("dense", 200, 512, False)
    after = entries(window_net("mul_"), cut52.X)[0]["topk"]  # as before: its mask no top-k of hf's values
    assert (after["gate"], after["k"], after["group_size"], after["gates"]) == ("block-2", 1, 2, 2)


class VolumeLocal(nn.Module):
    """``x + h · volume_mask · local_mask``: a volume top-k (128 of 256) and a local one (2 of 4 channels per
    position) of one map ``h``, both ranked first; ``nested``: the volume gate made first (``g = h · m1; g · m2``)."""

    def __init__(self, nested: bool) -> None:
        super().__init__()
        self.conv, self.nested = nn.Conv2d(4, 4, 3, padding=1), nested

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        t1 = h.flatten(1).topk(K, dim=1).values[:, -1:]
        t2 = h.topk(2, dim=1).values[:, -1:]
        if self.nested:
            g = h * (h.flatten(1) >= t1).view_as(h)
            return x + g * (h >= t2)
        return x + h * (h.flatten(1) >= t1).view_as(h) * (h >= t2)


@pytest.mark.parametrize("nested", [False, True])
def test_a_volume_and_a_local_topk_of_one_forward_have_an_entry_each(nested: bool) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), VolumeLocal(nested), nn.Flatten(),
                              nn.Linear(256, 10)).eval()
    detection = detect_layers(model, X, log=False)
    # before: one entry, calls 2, volume k=128/256, k_seen [[128, 256], [2, 4]]
    assert [(s["op"], s["calls"], s["gate"], s["k"], s["group_size"], s["gates"], "k_seen" in s)
            for s in detection.selections] == [("topk", 1, "volume", K, 256, 2, False),
                                               ("topk", 1, "local", 2, 4, 2, False)]
    assert [inline_text(s) for s in detection.selections] == [
        "1 (inline): top-k gate (volume, k=128/256, built from topk, 2 gates per call)",
        "1 (inline): top-k gate (local, k=2/4, built from topk, 2 gates per call)"]
    assert detection.auto_targets() == {"1": TWO}  # as before
