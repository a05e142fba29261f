"""The layer probe counts the ReLUs a model applies (``relu_calls``, :mod:`kwta_robust.relu_calls`) in the
selections' forward (:func:`kwta_robust.detect_selections.selections_outside`), which tracks the stack of running
modules already, not in a forward of its own: one forward of the user's model fewer (on a CIFAR ResNet-18, probe
time), and one copy of the module-stack logic. The count is the one made before on every form below (recorded from
the code before the fold: structural counts), the ReLUs inside a found gate still left out, and the selections'
tie-broken re-run (:func:`~kwta_robust.detect_selections._tie_broken_gates`) counts nothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wild_kwta_models import seeded as _seeded
from kwta_robust.detect import detect_layers
from kwta_robust.models import create_model
from test_inline_ties_ties import Block as TiedBlock, mnist


class KuangliuBlock(nn.Module):
    """kuangliu's ``BasicBlock``: its activations are ``F.relu`` calls, two per block."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class KuangliuResNet18(nn.Module):
    """kuangliu's CIFAR ResNet-18 (base width ``width``): 1 + 2 · 8 = 17 ``F.relu`` calls per forward."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        blocks, cin = [], width
        for cout, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)):
            blocks += [KuangliuBlock(cin, cout, stride), KuangliuBlock(cout, cout, 1)]
            cin = cout
        self.layers, self.linear = nn.Sequential(*blocks), nn.Linear(8 * width, 10)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class Sparsify2D(nn.Module):
    """Xiao et al.'s ``Sparsify2D``: a leaf top-k gate, 10 % of each sample's values kept."""

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        return x * (x >= flat.topk(max(1, flat.shape[1] // 10), dim=1).values[:, -1].view(-1, 1, 1, 1)).to(x)


class XiaoBlock(nn.Module):
    """Xiao et al.'s ``SparseBasicBlock``: an ``nn.ReLU`` held always, called only with ``use_relu``."""

    def __init__(self, channels: int, use_relu: bool) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1), nn.Conv2d(channels, channels, 3, 1, 1)
        self.relu, self.sparsify, self.use_relu = nn.ReLU(), Sparsify2D(), use_relu

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.sparsify(self.relu(out) if self.use_relu else out)
        out = self.conv2(out)
        return self.sparsify((self.relu(out) if self.use_relu else out) + x)


class XiaoNet(nn.Module):
    """A stem with ``F.relu``, two Xiao blocks, a head."""

    def __init__(self, use_relu: bool = False) -> None:
        super().__init__()
        self.stem, self.head = nn.Conv2d(3, 8, 3, 1, 1), nn.Linear(8, 10)
        self.blocks = nn.Sequential(XiaoBlock(8, use_relu), XiaoBlock(8, use_relu))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.adaptive_avg_pool2d(self.blocks(F.relu(self.stem(x))), 1).flatten(1))


class ClampNet(nn.Module):
    """ReLUs as clamps at 0 from below (3 counted), and a bounded clamp (not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 3, 1, 1), nn.Conv2d(4, 4, 3, 1, 1), nn.Linear(4, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = self.a(x).clamp(min=0)
        h = torch.clamp_min(self.b(h), 0) + self.b(h).clamp(0, 6) + self.b(h).clip(min=0)
        return self.c(h.mean((2, 3)))


class ReluGate(nn.Module):
    """A kWTA gate module whose forward calls ``F.relu``: found as a gate, its ReLU is part of it (not counted)."""

    def forward(self, h: Tensor) -> Tensor:
        flat = F.relu(h).flatten(1)
        return (flat * (flat >= flat.topk(max(1, flat.shape[1] // 10), dim=1).values[:, -1:])).view_as(h)


class ReluGateNet(nn.Module):
    """Two :class:`ReluGate` and one ``F.relu`` between them (the one counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 3, 1, 1), nn.Conv2d(4, 4, 3, 1, 1), nn.Linear(4, 10)
        self.gate1, self.gate2 = ReluGate(), ReluGate()

    def forward(self, x: Tensor) -> Tensor:
        return self.c(self.gate2(self.b(F.relu(self.gate1(self.a(x))))).mean((2, 3)))


class InlineNet(nn.Module):
    """A top-k written inline in the parent's ``forward``, a ReLU before it and one after (both counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 3, 1, 1), nn.Conv2d(4, 4, 3, 1, 1), nn.Linear(4, 10)

    def forward(self, x: Tensor) -> Tensor:
        flat = F.relu(self.a(x)).flatten(1)
        h = (flat * (flat >= flat.topk(50, dim=1).values[:, -1:])).view(len(x), 4, 32, 32)
        return self.c(torch.relu(self.b(h)).mean((2, 3)))



CIFAR = dict(in_channels=3, input_size=32)
#: name: (model, its ReLU count before the fold, leaf modules found as gates)
FORMS = {
    "kuangliu_resnet18": (lambda: KuangliuResNet18(), 17, 0),
    "xiao_sparsify_relu_unused": (lambda: XiaoNet(), 1, 2),
    "xiao_sparsify_use_relu": (lambda: XiaoNet(use_relu=True), 5, 2),
    "clamp_min_0": (ClampNet, 3, 0),
    "package_cnn_relu": (lambda: create_model("cnn", "relu", **CIFAR), 3, 0),
    "package_cnn_kwta": (lambda: create_model("cnn", {"name": "kwta", "ratio": 0.1}, **CIFAR), 0, 3),
    "package_resnet18_relu": (lambda: create_model("resnet18", "relu", **CIFAR, width=4), 17, 0),
    "gate_module_calls_f_relu": (ReluGateNet, 1, 2),
    "inline_topk_with_relu": (InlineNet, 2, 0),
}


def _probe(model: nn.Module, x: Tensor) -> tuple[int, int, int]:
    """The probe's ``relu_calls``, how many times it ran the model's forward, and the gates it found."""
    forwards = []
    handle = model.register_forward_pre_hook(lambda _module, _args: forwards.append(1))
    try:
        detection = detect_layers(model, x, log=False)
    finally:
        handle.remove()
    return detection.relu_calls, len(forwards), len(detection.names("gate"))


def test_the_probe_runs_the_models_forward_one_time_fewer() -> None:
    """Twice: the leaf probe's forward and the selections' (which counts the ReLUs); three times before."""
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert _probe(_seeded(KuangliuResNet18), x) == (17, 2, 0)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_each_form_counts_the_relus_it_counted_before_in_the_selections_forward(form: str) -> None:
    build, relus, gates = FORMS[form]
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert _probe(_seeded(build), x) == (relus, 2, gates)


def test_the_tie_broken_rerun_counts_no_relu() -> None:
    """An inline gate whose ties hide it on MNIST runs once more on nudged inputs (three forwards, four before);
    the one ``nn.ReLU`` after it is counted once."""
    model = _seeded(lambda: nn.Sequential(TiedBlock(), nn.ReLU(), nn.Flatten(), nn.Linear(784, 10)))
    forwards = []
    model.register_forward_pre_hook(lambda _module, _args: forwards.append(1))
    detection = detect_layers(model, mnist(), log=False)
    assert detection.selections[0]["ties_broken"] == 1e-2
    assert (detection.relu_calls, len(forwards)) == (1, 3)
