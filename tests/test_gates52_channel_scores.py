"""A channel-wise top-k whose channel score is ``h.mean``, ``h.abs().mean``, ``h.norm(p=2, dim=(2, 3))`` or
``h.amax(dim=(2, 3))`` over H, W keeps whole channels: the probe names its grouping ``whole-channel`` with that
statistic, and BPDA's smooth surrogate relaxes the ranking of that statistic (Xiao et al., ICLR 2020,
``Sparsify2D_all``: the max; users write the others). Before, the mean of ``|h|`` and the L2 norm of signed
feature maps were read as a ``local`` gate (k channels per location, ordered by nothing) and relaxed as one, and
the L2 norm of ReLU outputs as no gate at all. Conv ``[N, 1, 8, 8]`` → gate → linear, seeded; ``[N, C, H, W]``."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget
from attacks.gates import channel_statistic, infer_grouping, relaxed_gate
from bpda_helpers import assert_bpda_matches_relaxed
from kwta_robust.detect import detect_layers

#: The channel scores users write, ``[N, C, H, W] → [N, C]``, and the statistic each is named by.
SCORES: dict[str, tuple[Callable[[Tensor], Tensor], str]] = {
    "mean": (lambda h: h.mean(dim=(2, 3)), "mean"),
    "abs-mean": (lambda h: h.abs().mean(dim=(2, 3)), "abs-mean"),
    "l2": (lambda h: h.norm(p=2, dim=(2, 3)), "l2-norm"),
    "amax": (lambda h: h.amax(dim=(2, 3)), "max"),
}


def channel_topk(h: Tensor, score: str, k: int = 3) -> Tensor:
    """``h`` ``[N, C, H, W]`` with all but the ``k`` channels of largest ``score`` zeroed, per sample."""
    s = SCORES[score][0](h)
    keep = torch.zeros_like(s).scatter(1, s.topk(k, dim=1).indices, 1.0)
    return h * keep[:, :, None, None]


class Block(nn.Module):
    """A conv then the channel top-k written inline in its ``forward`` (no module of its own)."""

    def __init__(self, score: str) -> None:
        super().__init__()
        self.conv, self.score = nn.Conv2d(1, 8, 3), score

    def forward(self, x: Tensor) -> Tensor:
        return channel_topk(self.conv(x), self.score)


def _x(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("score", list(SCORES))
def test_a_channel_topk_is_named_whole_channel_with_the_statistic_it_ranks(score: str, relu: bool) -> None:
    x = _x(16, 8, 5, 5)
    x = x.relu() if relu else x
    fit = infer_grouping(x, channel_topk(x, score), known_gate=True)
    # on ReLU outputs |h|.mean is h.mean: the first name of the tie
    statistic = "mean" if relu and score == "abs-mean" else SCORES[score][1]
    assert fit is not None and (fit.grouping, fit.k, fit.statistic, fit.ordered_fraction) == (
        "whole-channel", 3, statistic, 1.0)


@pytest.mark.parametrize("score", list(SCORES))
def test_the_relaxation_is_a_sigmoid_of_the_statistic_per_channel(score: str) -> None:
    x = _x(4, 6, 3, 3, seed=2).requires_grad_(True)
    statistic = SCORES[score][1]
    s = SCORES[score][0](x)
    assert torch.allclose(channel_statistic(x, statistic), s, atol=1e-6)
    ranked = s.sort(dim=1, descending=True).values
    threshold = (ranked[:, 2:3] + ranked[:, 3:4]) / 2  # midway between the 3rd and 4th largest
    expected = x * torch.sigmoid((s - threshold) / (0.1 * s.std(dim=1, keepdim=True, correction=0)))[:, :, None, None]
    relaxed = relaxed_gate(x, channel_topk(x.detach(), score), "whole-channel", 0.1, statistic)
    assert torch.allclose(relaxed, expected, atol=1e-6)
    (grad,) = torch.autograd.grad((relaxed * _x(*x.shape, seed=3)).sum(), x)
    (want,) = torch.autograd.grad((expected * _x(*x.shape, seed=3)).sum(), x)
    assert torch.allclose(grad, want, atol=1e-6) and bool((grad != 0).any())


@pytest.mark.parametrize("score", ["abs-mean", "l2"])
def test_the_probe_and_bpda_relax_an_inline_channel_topk_on_its_statistic(score: str) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(Block(score), nn.Flatten(), nn.Linear(8 * 36, 3)).eval()
    # signed inputs: on [0, 1] images the conv's maps are mostly positive, and |h|.mean orders their channels as the
    # L2 norm does in every sample (then the first name, abs-mean, is read: either relaxation fits that gate)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    detection = detect_layers(model, x, log=False)
    assert detection.auto_targets() == {"0": LayerTarget("inline")}
    statistic = SCORES[score][1]
    conv = model[0].conv
    assert_bpda_matches_relaxed(model, detection.auto_targets(), "0", x, lambda t: model[2](relaxed_gate(
        conv(t), channel_topk(conv(t).detach(), score), "whole-channel", 0.1, statistic).flatten(1)))


def test_a_module_channel_topk_on_the_l2_norm_is_targeted_with_its_statistic() -> None:
    class L2TopK(nn.Module):
        def forward(self, h: Tensor) -> Tensor:
            return channel_topk(h, "l2", k=2)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 8, 3), L2TopK(), nn.Flatten(), nn.Linear(8 * 36, 3)).eval()
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    target = detect_layers(model, x, log=False).auto_targets()["1"]
    assert target == LayerTarget("gate", "whole-channel", "l2-norm")
    assert_bpda_matches_relaxed(model, {"1": target}, "1", x, lambda t: model[3](relaxed_gate(
        model[0](t), model[1](model[0](t).detach()), "whole-channel", 0.1, "l2-norm").flatten(1)))
