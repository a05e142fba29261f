"""A top-k gate whose module returns the 0/1 mask, applied by its parent (``out = g(h) · topk_mask(h)``): the layer
probe reads it as a gate (``output: mask`` in the evidence) and BPDA's smooth surrogate relaxes the mask, where
before it was piecewise constant and passed the gradient straight through."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget
from attacks.gates import mask_as_gate, relaxed_gate
from bpda_helpers import assert_bpda_matches_relaxed
from kwta_robust.detect import detect_layers


class TopKMask(nn.Module):
    """The 0/1 mask of the ``k`` largest features per sample (``[N, F]``) or per channel (``[N, C, L]``)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x).scatter(-1, x.topk(self.k, dim=-1).indices, 1.0)


class Masked(nn.Module):
    """``scale · h · mask(h)``: the mask computed from ``h`` and applied to another tensor."""

    def __init__(self, mask: nn.Module) -> None:
        super().__init__()
        self.mask = mask

    def forward(self, h: Tensor) -> Tensor:
        return 2.0 * h * self.mask(h)


class HeavisideMask(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)


def net(mask: nn.Module) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(12, 16), Masked(mask), nn.Linear(16, 3)).eval()


X = torch.rand(32, 12, generator=torch.Generator().manual_seed(1))


def test_a_top_k_mask_module_is_a_gate_and_bpda_relaxes_the_mask() -> None:
    model = net(TopKMask(4))
    detection = detect_layers(model, X)
    finding = detection.finding("1.mask")
    assert finding is not None and (finding.kinds, finding.grouping) == (["gate"], "dense")
    assert (finding.evidence["k"], finding.evidence["group_size"], finding.evidence["output"]) == (4, 16, "mask")
    target = detection.auto_targets()["1.mask"]
    assert target.describe() == "gate/dense/mask"

    def relaxed(t: Tensor) -> Tensor:  # the hard mask forward, the relaxed mask's gradient backward
        h = model[0](t)
        hard = model[1].mask(h.detach())
        soft = relaxed_gate(h, hard, "dense", 0.1, mask=True)
        return model[2](2.0 * h * (soft + (hard - soft).detach()))

    assert_bpda_matches_relaxed(model, detection.auto_targets(), "1.mask", X, relaxed)
    # a module named by the user (no probe target): the mask is recognised at the call
    assert_bpda_matches_relaxed(model, {"1.mask": LayerTarget()}, "1.mask", X, relaxed)
    from eval_helpers import make_record
    from kwta_robust.layer_text import layer_notes

    record = make_record()
    record.detection = detection.to_dict()
    assert "1.mask (TopKMask): top-k gate (dense, k=4/16, returns the 0/1 mask)" in layer_notes(record)[0]


def test_a_step_mask_stays_piecewise_constant_and_a_gate_output_is_not_a_mask() -> None:
    found = detect_layers(net(HeavisideMask()), X).finding("1.mask")
    assert found is not None and found.kinds == ["piecewise-constant"]
    binary = (X > 0.5).to(X.dtype)  # a gate on 0/1 inputs returns 0/1 values: x · mask, not a mask
    assert mask_as_gate(binary, binary * TopKMask(3)(binary)) is None
    assert torch.equal(mask_as_gate(X, TopKMask(3)(X)), X * TopKMask(3)(X))


class SpatialWinnerMask(nn.Module):
    """The 0/1 mask of each channel's single largest position (a spatial winner-take-all, ``[N, C, H, W]``)."""

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)
        return torch.zeros_like(flat).scatter(-1, flat.argmax(-1, keepdim=True), 1.0).view_as(x)


def test_a_sparse_mask_is_a_mask_not_the_gate_it_builds() -> None:
    """One winner in 1,024 per channel: over all elements the mask agrees with its input (out == x or 0) at
    1 - 1/1024 >= MIN_MASK_AGREEMENT, so it was read as the gate x · mask itself (no ``output: mask``) and BPDA
    relaxed x · mask instead of the mask."""
    h = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    mask = SpatialWinnerMask()(h)
    assert torch.equal(mask_as_gate(h, mask), h * mask)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.conv, self.mask, self.fc = nn.Conv2d(1, 4, 3, padding=1), SpatialWinnerMask(), nn.Linear(4096, 3)

        def forward(self, x: Tensor) -> Tensor:
            h = self.conv(x)
            return self.fc((h * self.mask(h)).flatten(1))

    model, x = Net().eval(), torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    detection = detect_layers(model, x)
    finding = detection.finding("mask")
    assert finding is not None and finding.grouping == "channel" and finding.evidence.get("output") == "mask"
    assert detection.auto_targets()["mask"].describe() == "gate/channel/mask"

    def relaxed(t: Tensor) -> Tensor:
        h = model.conv(t)
        hard = model.mask(h.detach())
        soft = relaxed_gate(h, hard, "channel", 0.1, mask=True)
        return model.fc((h * (soft + (hard - soft).detach())).flatten(1))

    assert_bpda_matches_relaxed(model, detection.auto_targets(), "mask", x, relaxed)
    assert_bpda_matches_relaxed(model, {"mask": LayerTarget()}, "mask", x, relaxed)


class CausalMask(nn.Module):
    """An attention-style mask shaped like the scores, independent of their values."""

    def forward(self, s: Tensor) -> Tensor:
        return torch.tril(torch.ones_like(s))


class FrozenMask(nn.Module):
    """A fixed 0/1 pattern with 8 of 16 units kept, whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("m", (torch.randperm(16, generator=torch.Generator().manual_seed(3)) < 8).float())

    def forward(self, x: Tensor) -> Tensor:
        return self.m.expand_as(x)


def test_a_mask_that_does_not_depend_on_its_input_is_no_gate() -> None:
    """A constant 0/1 mask keeps a constant count and the ± std shifts leave it unchanged, so it passed for a
    gate (gate/volume/mask, gate/dense/mask) and BPDA invented a gradient through a module whose output does not
    depend on its input; before mask outputs were read, neither was a finding."""

    class Scores(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mask = CausalMask()

        def forward(self, x: Tensor) -> Tensor:  # x [N, T, D]
            s = x @ x.transpose(1, 2)
            return (s * self.mask(s)).flatten(1).sum(1, keepdim=True).repeat(1, 3)

    tokens = torch.randn(16, 6, 8, generator=torch.Generator().manual_seed(1))
    assert detect_layers(Scores().eval(), tokens).finding("mask") is None
    assert detect_layers(net(FrozenMask()), X).finding("1.mask") is None
    # a top-k mask of a single sample (no position competes across the batch) is still a gate
    found = detect_layers(net(TopKMask(4)), X[:1]).finding("1.mask")
    assert found is not None and found.kinds == ["gate"] and found.evidence["output"] == "mask"


def test_only_a_0_1_float_mask_of_the_inputs_shape_holding_both_values_is_read_as_a_mask() -> None:
    x = torch.tensor([[0.5, 2.0, -1.0, 3.0]])
    mask = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    assert torch.equal(mask_as_gate(x, mask), x * mask)
    assert mask_as_gate(x, mask[:, :2]) is None  # another shape
    assert mask_as_gate(x, mask.long()) is None  # not floating point
    assert mask_as_gate(x, torch.tensor([[0.0, 1.0, 2.0, 1.0]])) is None  # a value other than 0 and 1
    assert mask_as_gate(x, torch.ones_like(x)) is None and mask_as_gate(x, torch.zeros_like(x)) is None
    some_ones = torch.tensor([[0.5, 1.0, -1.0, 3.0]])  # 1 at one of the mask's ones, not at all: still a mask
    assert torch.equal(mask_as_gate(some_ones, mask), some_ones * mask)
