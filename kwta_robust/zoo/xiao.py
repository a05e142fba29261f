"""Xiao, Zhong & Zheng, *Enhancing Adversarial Defense by k-Winners-Take-All* (ICLR 2020): the kWTA networks of
their repository (github.com/a554b554/kWTA-Activation, ``kWTA/models.py``, ``kWTA/resnet.py``,
``kWTA/mnist_model.py``), rebuilt from its description with the same module names, so their ``state_dict`` keys
and shapes are those of the released checkpoints.

**Layers.** ``Sparsify1D`` (dense), ``Sparsify2D_vol`` (``sparse_func='vol'``: over the C·H·W volume of each
sample) and ``Sparsify2D`` (``'reg'``: per channel, over H·W) keep every entry ``>=`` the k-th largest of its group
(ties at the threshold all kept) and zero the rest, with ``k = int(ratio · group size)``. That is exactly
:class:`~kwta_robust.layers.KWTA` / ``KWTA2d`` (modes ``dense`` / ``volume`` / ``channel``) except for the k rule
(ours is ``floor(ratio · size + 1e-9)``; the two differ when ``ratio · size`` lies just below an integer, e.g.
0.29 · 100), so :class:`XiaoKWTA` / :class:`XiaoKWTA2d` are our layers with Xiao's k rule: they keep the BPDA
protocol (``set_backward``: identity, smooth, learned surrogates) and have no state. Where Xiao's code fails
(``int(ratio · size) == 0``, ``topk(0)``) they keep one unit.

**Networks.**

* :func:`xiao_spresnet18` — ``SparseResNet18``: a 3×3 conv stem → BN → **ReLU** (the stem keeps its ReLU in
  Xiao's code), four stages of two ``SparseBasicBlock`` (``bn1(conv1) → [ReLU] → kWTA → bn2(conv2) + shortcut →
  [ReLU] → kWTA``; the ReLUs only with ``relu=True``), 4×4 average pooling, ``linear``. Bias-free convolutions
  (``bias=False``, Xiao's default). 32×32 inputs.
* :func:`xiao_spcnn` — ``SparseMNIST_CNN``: ``cnn = Sequential(conv3×3, kWTA, conv3×3/2, kWTA, conv3×3, kWTA,
  conv3×3/2, kWTA, Flatten, Linear(7·7·C₄, hidden), Sparsify1D, Linear(hidden, 10))`` (keys ``cnn.0``, ``cnn.2``,
  ``cnn.4``, ``cnn.6``, ``cnn.9``, ``cnn.11``); the conv gates follow ``func``, the dense gate is always
  ``Sparsify1D(sp2)``.

**Released checkpoint.** ``kwta_spresnet18_0.1_cifar_adv.pth`` (the ``robustness_workshop`` v0.0.1 release used
by Tramèr et al., NeurIPS 2020) is a plain ``state_dict`` of ``SparseResNet18(sparsities=[0.1]*4,
sparse_func='vol')`` — ``torch.save(model.state_dict())`` as in Xiao's notebooks: no wrapper dict, no ``module.``
prefix. Xiao's notebooks train on ``ToTensor()`` followed by ``Normalize(0, 1)``, i.e. raw [0, 1] pixels, so the
faithful model has **no** normalization (``mean``/``std`` default ``None``); it returns logits. No MNIST checkpoint
is public; :func:`xiao_spcnn` follows the repository's ``spCNN`` configs (widths ×1, ×2, ×4 of 32-32-64-64,
hidden 20,000).

Registered as ``xiao-spresnet18`` and ``xiao-spcnn`` (the activation picks the gates: kWTA ``volume`` → ``'vol'``,
``channel`` → ``'reg'``, an absolute ``k`` → Xiao's ``k``-active variant (``'kact'``, over the C·H·W volume: mode
``volume`` only, channel mode with ``k`` is refused); ``relu`` → Xiao's ReLU ``ResNet18`` /
``MNIST_CNN`` twin, whose keys are the same).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.errors import ConfigError, is_finite_number
from kwta_robust.layers import KWTA, ActivationSpec, KWTA2d
from kwta_robust.models.registry import register_model
from kwta_robust.zoo.common import input_normalization

#: ``sparse_func`` values supported (Xiao's ``sparse_func_dict`` also has 'abs', 'invabs', 'brelu', 'kact').
SPARSE_FUNCS: tuple[str, ...] = ("vol", "reg", "relu")
K_RULE = "int(ratio*size)"

Gate = Callable[[], nn.Module]


class _XiaoKRule:
    """Xiao's ``k = int(ratio · size)`` (one unit where that is 0); an absolute ``k`` is capped at the size."""

    def effective_k(self, size: int, training: bool | None = None) -> int:
        if self.ratio is not None:  # type: ignore[attr-defined]
            return max(1, int(self.ratio * size))  # type: ignore[attr-defined]
        return min(size, int(self.k))  # type: ignore[attr-defined]

    def describe(self) -> dict:
        return {**super().describe(), "k_rule": K_RULE}  # type: ignore[misc]


class XiaoKWTA(_XiaoKRule, KWTA):
    """``Sparsify1D`` (``ratio``) / ``Sparsify1D_kactive`` (``k``): ``[N, F] → [N, F]``, winners over the F
    features of each sample."""


class XiaoKWTA2d(_XiaoKRule, KWTA2d):
    """``Sparsify2D_vol`` (``mode='volume'``) / ``Sparsify2D`` (``mode='channel'``): ``[N, C, H, W] → [N, C, H, W]``."""

    def __init__(self, ratio: float | None = None, k: int | None = None, mode: str = "volume") -> None:
        if mode not in ("volume", "channel"):
            raise ValueError(f"XiaoKWTA2d mode must be 'volume' or 'channel', got {mode!r}")
        if k is not None and mode == "channel":  # Xiao's 'kact' is cross-channel: there is no per-channel k-active
            raise ValueError(f"XiaoKWTA2d: an absolute k ({k}) needs mode 'volume' (Xiao's 'kact' picks k over C·H·W)")
        super().__init__(ratio=ratio, k=k, mode=mode)  # type: ignore[arg-type]


def _check_ratio(value: float, where: str) -> float:
    if not (is_finite_number(value) and 0.0 < value <= 1.0):
        raise ConfigError(f"{where}: a kWTA ratio must be a number in (0, 1], got {value!r}")
    return float(value)


def conv_gate(sparse_func: str, ratio: float | None = None, k: int | None = None) -> Gate:
    """A builder of Xiao's convolutional gate ``sparse_func`` (``'vol'``, ``'reg'`` or ``'relu'``)."""
    if sparse_func == "relu":
        return nn.ReLU
    if sparse_func not in SPARSE_FUNCS:
        raise ConfigError(f"sparse_func: {sparse_func!r} is not supported; use one of {', '.join(SPARSE_FUNCS)}")
    if k is not None and sparse_func == "reg":
        # Xiao's only absolute-k conv gate ('kact', Sparsify2D_kactive) takes the top k of the whole C·H·W volume; a
        # per-channel top k would be a layer their code does not have, built silently under their name
        raise ConfigError(f"activation: an absolute k ({k}) with kWTA mode channel ('reg') has no counterpart in "
                          "Xiao's code, whose k-active gate ('kact') picks k over the whole C·H·W volume; use mode "
                          "volume with k, or mode channel with a ratio")
    mode = "volume" if sparse_func == "vol" else "channel"
    return lambda: XiaoKWTA2d(ratio=ratio, k=k, mode=mode)


class SparseBasicBlock(nn.Module):
    """``bn1(conv1(x)) → [ReLU] → sparse1 → bn2(conv2) + shortcut(x) → [ReLU] → sparse2`` (Xiao's block)."""

    def __init__(self, in_planes: int, planes: int, stride: int, gate: Gate, use_relu: bool, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self.use_relu = use_relu
        self.sparse1 = gate()
        self.sparse2 = gate()
        if use_relu:  # Xiao's block always holds an (unused) ReLU; it has no state, so only a used one is built
            self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=bias),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x))
        if self.use_relu:
            out = self.relu(out)
        out = self.bn2(self.conv2(self.sparse1(out))) + self.shortcut(x)
        if self.use_relu:
            out = self.relu(out)
        return self.sparse2(out)


class SparseResNet(nn.Module):
    """Xiao's ``SparseResNet`` with basic blocks: ``[N, C, 32, 32]`` in [0, 1] → logits ``[N, num_classes]``.
    ``gates``: one gate builder per stage."""

    def __init__(self, gates: Sequence[Gate], num_blocks: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10,
                 in_channels: int = 3, use_relu: bool = False, bias: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.normalize = input_normalization(in_channels, mean, std)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for i, (blocks, gate) in enumerate(zip(num_blocks, gates)):
            planes = 64 * 2**i
            stage = []
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                stage.append(SparseBasicBlock(in_planes, planes, stride, gate, use_relu, bias))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.linear = nn.Linear(in_planes, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        if self.normalize is not None:
            x = self.normalize(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


class SparseMNISTCNN(nn.Module):
    """Xiao's ``SparseMNIST_CNN`` (see the module docstring): ``[N, C, S, S]`` in [0, 1] → logits."""

    def __init__(self, gate: Gate, dense_gate: nn.Module, num_channels: Sequence[int], hidden_size: int, bias: bool,
                 num_classes: int, in_channels: int, input_size: int,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        c = [int(v) for v in num_channels]
        side = input_size
        for _ in range(2):  # two 3×3 convolutions with stride 2 and padding 1
            side = (side - 1) // 2 + 1
        self.normalize = input_normalization(in_channels, mean, std)
        self.cnn = nn.Sequential(
            nn.Conv2d(in_channels, c[0], 3, padding=1, bias=bias), gate(),
            nn.Conv2d(c[0], c[1], 3, padding=1, stride=2, bias=bias), gate(),
            nn.Conv2d(c[1], c[2], 3, padding=1, bias=bias), gate(),
            nn.Conv2d(c[2], c[3], 3, padding=1, stride=2, bias=bias), gate(),
            nn.Flatten(),
            nn.Linear(side * side * c[3], hidden_size), dense_gate,
            nn.Linear(hidden_size, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.cnn(x if self.normalize is None else self.normalize(x))


def xiao_spresnet18(gamma: float = 0.1, *, sparsities: Sequence[float] | None = None, sparse_func: str = "vol",
                    relu: bool = False, bias: bool = False, num_classes: int = 10, in_channels: int = 3,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> SparseResNet:
    """``SparseResNet18(sparsities=[gamma]*4, sparse_func='vol')`` — the network of the released CIFAR-10
    checkpoint ``kwta_spresnet18_0.1_cifar_adv.pth`` with ``gamma=0.1``. ``sparsities``: one ratio per stage
    instead of ``gamma``. ``[N, 3, 32, 32]`` in [0, 1] (no normalization unless ``mean``/``std``) → logits."""
    ratios = [gamma] * 4 if sparsities is None else list(sparsities)
    if len(ratios) != 4:
        raise ConfigError(f"sparsities: give one ratio per stage (4), got {ratios!r}")
    if sparse_func != "relu":
        ratios = [_check_ratio(r, "gamma" if sparsities is None else "sparsities") for r in ratios]
    gates = [conv_gate(sparse_func, r) for r in ratios]
    return SparseResNet(gates, (2, 2, 2, 2), num_classes, in_channels, bool(relu), bool(bias), mean, std)


def xiao_spcnn(sp1: float, sp2: float | None = None, *, func: str = "vol",
               num_channels: Sequence[int] = (32, 32, 64, 64), hidden_size: int = 20000, bias: bool = True,
               num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> SparseMNISTCNN:
    """``SparseMNIST_CNN(sp1, sp2, func, num_channels, hidden_size, bias)``: conv gates ``func`` with ratio ``sp1``,
    the dense gate ``Sparsify1D(sp2)`` (default ``sp2 = sp1``). ``[N, 1, 28, 28]`` in [0, 1] → logits."""
    sp2 = sp1 if sp2 is None else sp2
    if len(num_channels) != 4:
        raise ConfigError(f"num_channels: give four conv widths, got {list(num_channels)!r}")
    gate = conv_gate(func, _check_ratio(sp1, "sp1") if func != "relu" else None)
    dense = XiaoKWTA(ratio=_check_ratio(sp2, "sp2"))
    return SparseMNISTCNN(gate, dense, num_channels, int(hidden_size), bool(bias), num_classes, in_channels,
                          input_size, mean, std)


# --- registry entries (activation injected; ``relu`` builds Xiao's ReLU twin) -------------------------------------


def _gates_from(activation: ActivationSpec, arch: str) -> tuple[Gate, Callable[[], nn.Module]]:
    """(conv gate builder, dense gate builder) for ``activation``."""
    if activation.name == "relu":
        return nn.ReLU, nn.ReLU
    if activation.boost_strength != 0.0 or activation.k_inference_factor != 1.0:
        raise ConfigError(f"arch {arch!r}: Xiao's kWTA has no boosting and no k_inference_factor; drop them")
    if activation.mode not in ("volume", "channel"):
        raise ConfigError(f"arch {arch!r}: kWTA mode {activation.mode!r} is not Xiao's; use volume ('vol') or channel "
                          "('reg')")
    func = "vol" if activation.mode == "volume" else "reg"
    return conv_gate(func, activation.ratio, activation.k), lambda: XiaoKWTA(ratio=activation.ratio, k=activation.k)


@register_model("xiao-spresnet18")
def xiao_spresnet18_arch(activation: ActivationSpec, num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                         mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                         relu: bool = False, bias: bool = False) -> SparseResNet:
    """Xiao's SparseResNet18 (all four stages at the activation's ratio); 32×32 inputs only (4×4 final pooling)."""
    if input_size != 32:
        raise ConfigError("arch 'xiao-spresnet18': input_size must be 32 (the network pools 4×4 maps), got "
                          f"{input_size}")
    conv, _ = _gates_from(activation, "xiao-spresnet18")
    return SparseResNet([conv] * 4, (2, 2, 2, 2), num_classes, in_channels, bool(relu), bool(bias), mean, std)


@register_model("xiao-spcnn")
def xiao_spcnn_arch(activation: ActivationSpec, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    num_channels: Sequence[int] = (32, 32, 64, 64), hidden_size: int = 20000,
                    bias: bool = True) -> SparseMNISTCNN:
    """Xiao's SparseMNIST_CNN (conv and dense gates at the activation's ratio)."""
    if len(num_channels) != 4:
        raise ConfigError(f"arch 'xiao-spcnn': num_channels needs four widths, got {list(num_channels)!r}")
    conv, dense = _gates_from(activation, "xiao-spcnn")
    return SparseMNISTCNN(conv, dense(), num_channels, int(hidden_size), bool(bias), num_classes, in_channels,
                          input_size, mean, std)
