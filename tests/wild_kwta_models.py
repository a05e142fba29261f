"""kWTA models written the way users write them, not from this package's layers: the models of
tests/test_wild_models*.py, each a factory ``wild_kwta_models:NAME`` (``--model-factory``), on 1×8×8 inputs with
a few hundred parameters, untrained (what is checked is what the harness finds and does, not accuracy).

(1) Xiao et al.'s ``Sparsify2D`` (top-k over C·H·W by ``topk`` and a threshold compare) in a ResNet basic block;
(2) a Numenta-style ``KWinners2d`` (boosting by duty cycles, nupic.torch semantics, our own variant); (3) a
channel-wise kWTA by ``kthvalue``; (4) by ``sort`` and ``gather`` of the threshold; (5) by ``topk(...).indices`` and
a scattered mask; (6) written inline in a residual block's ``forward``; (7) a custom ``torch.autograd.Function``
with a straight-through (7a) or a masked (7b) backward; (8) a threshold from ``torch.quantile``; (9) on a dense
layer (values scattered back); (10) followed by ``F.pad`` and ``torch.cat`` with a skip connection.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RATIO = 0.2  # fraction of winners
X = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))


class Sparsify2D(nn.Module):
    """(1) Xiao et al. (ICLR 2020), as released: top-k over C·H·W per sample, ``comp * x``."""

    def __init__(self, sr: float = RATIO) -> None:
        super().__init__()
        self.sr = sr

    def forward(self, x: Tensor) -> Tensor:
        k = int(self.sr * x.shape[1] * x.shape[2] * x.shape[3])
        topval = x.view(x.shape[0], -1).topk(k, dim=1)[0][:, -1]
        topval = topval.expand(x.shape[1], x.shape[2], x.shape[3], x.shape[0]).permute(3, 0, 1, 2)
        return (x >= topval).to(x) * x


class XiaoBlock(nn.Module):
    """A ResNet basic block with ``Sparsify2D`` in place of its ReLUs."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu1, self.relu2 = Sparsify2D(), Sparsify2D()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + x)


def update_duty_cycle(module: nn.Module, out: Tensor) -> None:
    """nupic.torch's training-time duty-cycle update of a k-winners ``module`` (buffers ``duty_cycle`` ``[1, C, 1, 1]``
    and ``learning_iterations``) from its output ``out`` ``[N, C, H, W]``: a running mean of each channel's winners
    over at most the last 1000 samples."""
    module.learning_iterations += out.shape[0]
    period = min(1000, int(module.learning_iterations))
    module.duty_cycle.mul_(period - out.shape[0]).add_((out > 0).sum(dim=(0, 2, 3)).view(1, -1, 1, 1))
    module.duty_cycle.div_(period)


class KWinners2d(nn.Module):
    """(2) Numenta-style k-winners with boosting: winners of ``x · exp((p - duty) · beta)`` over C·H·W, duty
    cycles updated in training (nupic.torch's global ``KWinners2d``)."""

    def __init__(self, channels: int, percent_on: float = RATIO, boost_strength: float = 1.0) -> None:
        super().__init__()
        self.percent_on, self.boost_strength = percent_on, boost_strength
        self.register_buffer("duty_cycle", torch.zeros(1, channels, 1, 1))
        self.register_buffer("learning_iterations", torch.tensor(0))

    def forward(self, x: Tensor) -> Tensor:
        k = int(round(self.percent_on * x[0].numel()))
        boosted = (x * torch.exp((self.percent_on - self.duty_cycle) * self.boost_strength)).detach()
        flat = boosted.reshape(x.shape[0], -1)
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1, sorted=False)[1], True)
        out = x.masked_fill(~mask.view_as(x), 0)
        if self.training:
            update_duty_cycle(self, out)
        return out


def kth_channel(x: Tensor, ratio: float = RATIO) -> Tensor:
    """(3) top-k per channel, the threshold by ``kthvalue``."""
    b, c, h, w = x.shape
    f, k = x.reshape(b, c, h * w), max(1, int(ratio * h * w))
    t = f.kthvalue(h * w - k + 1, dim=2, keepdim=True).values
    return (f * (f >= t).float()).view_as(x)


def sort_gather(x: Tensor, ratio: float = RATIO) -> Tensor:
    """(4) the k-th largest by ``sort`` and ``gather``; ``torch.where``."""
    f = x.flatten(1)
    k = max(1, int(ratio * f.shape[1]))
    kth = torch.full((f.shape[0], 1), k - 1, dtype=torch.long, device=f.device)
    t = torch.sort(f, dim=1, descending=True)[0].gather(1, kth)
    return torch.where(f >= t, f, torch.zeros_like(f)).view_as(x)


def topk_scatter(x: Tensor, ratio: float = RATIO) -> Tensor:
    """(5) a 0/1 mask scattered at ``topk(...).indices``."""
    f = x.flatten(1)
    idx = torch.topk(f, max(1, int(ratio * f.shape[1])), dim=1).indices
    return (f * torch.zeros_like(f).scatter(1, idx, 1.0)).view_as(x)


def quantile_kwta(x: Tensor, ratio: float = RATIO) -> Tensor:
    """(8) the threshold by ``torch.quantile``."""
    f = x.flatten(1)
    return (f * (f >= torch.quantile(f, 1 - ratio, dim=1, keepdim=True))).view_as(x)


class STEKwta(torch.autograd.Function):
    """(7a) top-k forward, straight-through backward."""

    @staticmethod
    def forward(ctx, x: Tensor, k: int) -> Tensor:  # noqa: ARG004 - autograd's signature
        f = x.flatten(1)
        return (f * (f >= f.topk(k, dim=1).values[:, -1:])).view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:  # noqa: ARG004
        return g, None


class MaskedKwta(torch.autograd.Function):
    """(7b) top-k forward, the gradient masked by the winners."""

    @staticmethod
    def forward(ctx, x: Tensor, k: int) -> Tensor:
        f = x.flatten(1)
        mask = (f >= f.topk(k, dim=1).values[:, -1:]).to(x.dtype).view_as(x)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        (mask,) = ctx.saved_tensors
        return g * mask, None


class FnKwta(nn.Module):
    """A module applying an autograd ``Function`` kWTA."""

    def __init__(self, fn: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn.apply(x, max(1, int(RATIO * x[0].numel())))


class Lambda(nn.Module):
    """A module calling a kWTA function."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class Conv(nn.Module):
    """conv → ``a1`` → conv → ``a2`` → linear head."""

    def __init__(self, a1: nn.Module, a2: nn.Module) -> None:
        super().__init__()
        self.c1, self.a1, self.c2, self.a2 = nn.Conv2d(1, 4, 3, padding=1), a1, nn.Conv2d(4, 4, 3, padding=1), a2
        self.head = nn.Linear(256, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.a2(self.c2(self.a1(self.c1(x)))).flatten(1))


class InlineResidual(nn.Module):
    """(6) ``x + kwta(conv(x))``, the kWTA written inline in the block's forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        f = h.flatten(1)
        thr = f.topk(int(RATIO * f.shape[1]), dim=1)[0][:, -1].unsqueeze(1)
        return x + (f * (f >= thr).float()).view_as(h)


class DenseKwta(nn.Module):
    """(9) top-k of a dense layer, the winning values scattered into zeros."""

    def __init__(self, k: int = 6) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        v, i = x.topk(self.k, dim=1)
        return torch.zeros_like(x).scatter(1, i, v)


class CatNet(nn.Module):
    """(10) stem → conv → kWTA, padded and joined with the padded stem output (a skip concat) → head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.kwta = Lambda(topk_scatter)
        self.head = nn.Linear(8 * 10 * 10, 3)

    def forward(self, x: Tensor) -> Tensor:
        s = self.stem(x)
        h = torch.cat([F.pad(self.kwta(self.conv(s)), (1, 1, 1, 1)), F.pad(s, (1, 1, 1, 1))], dim=1)
        return self.head(h.flatten(1))


def seeded(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build().eval()


def xiao() -> nn.Module:
    return seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Sparsify2D(), XiaoBlock(4), nn.Flatten(),
                                        nn.Linear(256, 3)))


def numenta() -> nn.Module:
    """Duty cycles as after training (unequal per channel: the boost changes the winners)."""
    model = seeded(lambda: Conv(KWinners2d(4), KWinners2d(4)))
    duty = torch.rand(2, 1, 4, 1, 1, generator=torch.Generator().manual_seed(1)) * 0.4
    model.a1.duty_cycle.copy_(duty[0])
    model.a2.duty_cycle.copy_(duty[1])
    return model


def kthvalue_channel() -> nn.Module:
    return seeded(lambda: Conv(Lambda(kth_channel), Lambda(kth_channel)))


def sort_threshold() -> nn.Module:
    return seeded(lambda: Conv(Lambda(sort_gather), Lambda(sort_gather)))


def scatter_mask() -> nn.Module:
    return seeded(lambda: Conv(Lambda(topk_scatter), Lambda(topk_scatter)))


def inline_residual() -> nn.Module:
    return seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), InlineResidual(), nn.Flatten(),
                                        nn.Linear(256, 3)))


def function_straight_through() -> nn.Module:
    return seeded(lambda: Conv(FnKwta(STEKwta), FnKwta(STEKwta)))


def function_masked() -> nn.Module:
    return seeded(lambda: Conv(FnKwta(MaskedKwta), FnKwta(MaskedKwta)))


def quantile_threshold(ratio: float = RATIO) -> nn.Module:
    return seeded(lambda: Conv(Lambda(lambda x: quantile_kwta(x, ratio)), Lambda(lambda x: quantile_kwta(x, ratio))))


def dense() -> nn.Module:
    return seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), DenseKwta(), nn.Linear(32, 32), DenseKwta(),
                                        nn.Linear(32, 3)))


def pad_cat() -> nn.Module:
    return seeded(CatNet)


class FunctionInBlock(nn.Module):
    """(7c) ``x + Fn.apply(conv(x), k)``: a custom ``autograd.Function`` kWTA called inline in a block's forward."""

    def __init__(self, fn: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.conv, self.fn = nn.Conv2d(4, 4, 3, padding=1), fn

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fn.apply(self.conv(x), int(RATIO * x[0].numel()))


def function_in_block(fn: type[torch.autograd.Function] = MaskedKwta) -> nn.Module:
    return seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), FunctionInBlock(fn), nn.Flatten(),
                                        nn.Linear(256, 3)))


class ScatterValuesBlock(nn.Module):
    """(6b) ``x + zeros.scatter(1, idx, values)`` inline in a block: the winning values scattered, no mask."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x).flatten(1)
        v, i = h.topk(int(RATIO * h.shape[1]), dim=1)
        return x + torch.zeros_like(h).scatter(1, i, v).view_as(x)


def inline_scattered_values() -> nn.Module:
    return seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), ScatterValuesBlock(), nn.Flatten(),
                                        nn.Linear(256, 3)))
