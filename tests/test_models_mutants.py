"""Mutation round on the architectures (cnn.py, mlp.py, resnet.py, wideresnet.py): parameter counts worked out
by hand from the papers' layer tables, feature-map sizes per stage, kWTA unit counts, layer order, and a forward
pass re-implemented with torch.nn.functional from the paper's block definition (strides and shortcuts fixed here,
not read from the modules)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kwta_robust.errors import ConfigError
from kwta_robust.layers import KWTA, KWTA2d, kwta_layers
from kwta_robust.models import create_model

from test_models import KWTA_SPEC


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so that a dropped or misplaced BN changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)


def bn(x: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


MEAN3, STD3 = [0.4, 0.5, 0.6], [0.2, 0.25, 0.5]


def normalized(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(STD3).view(1, 3, 1, 1)


# ---------------------------------------------------------------- small CNN


def test_cnn_default_has_the_documented_parameter_count() -> None:
    # conv5x5 1->16 (+bias) 416, conv5x5 16->32 12832, fc 32*7*7->256 401664, fc 256->10 2570 = 417482 (0.42M)
    assert n_params(create_model("cnn")) == 417482
    # BatchNorm: bias-free convs (400 + 12800), BN 2*16 + 2*32, same dense layers
    assert n_params(create_model("cnn", batch_norm=True)) == 400 + 12800 + 32 + 64 + 401664 + 2570


def test_cnn_layer_order_and_kwta_units() -> None:
    model = create_model("cnn", KWTA_SPEC, input_size=8, channels=[3, 4], hidden=5, kernel_size=3, batch_norm=True)
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, KWTA2d] * 2  # activation after pooling (docstring)
    assert [m.kernel_size for m in model.features if isinstance(m, nn.MaxPool2d)] == [2, 2]
    assert [m.padding for m in model.features if isinstance(m, nn.Conv2d)] == [(1, 1), (1, 1)]
    layers = list(kwta_layers(model).values())
    assert [type(m) for m in layers] == [KWTA2d, KWTA2d, KWTA]
    assert [m.num_units for m in layers] == [3, 4, 5]


def test_cnn_tiny_count_and_odd_input_size() -> None:
    # conv3x3 1->3: 30, conv3x3 3->4: 112, side 8 -> 4 -> 2, fc 16->5: 85, fc 5->7: 42
    model = create_model("cnn", input_size=8, channels=[3, 4], hidden=5, kernel_size=3, num_classes=7)
    assert n_params(model) == 269
    # 7 -> 3 -> 1 (floor): conv5x5 1->2: 52, conv5x5 2->2: 102, fc 2->4: 12, fc 4->10: 50
    odd = create_model("cnn", input_size=7, channels=[2, 2], hidden=4)
    assert n_params(odd) == 216 and odd(torch.rand(2, 1, 7, 7)).shape == (2, 10)


def test_cnn_forward_matches_a_functional_reimplementation() -> None:
    torch.manual_seed(0)
    model = create_model("cnn", input_size=8, channels=[3, 4], hidden=5, kernel_size=3, num_classes=7,
                         mean=[0.25], std=[0.5]).eval()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    fc1, fc2 = model.classifier[1], model.classifier[3]
    x = torch.rand(2, 1, 8, 8)
    out = (x - 0.25) / 0.5
    for conv in convs:
        out = F.relu(F.max_pool2d(F.conv2d(out, conv.weight, conv.bias, padding=1), 2))
    expected = F.linear(F.relu(F.linear(out.flatten(1), fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    assert torch.allclose(model(x), expected, atol=1e-5)


@pytest.mark.parametrize("arch,extra", [("cnn", {"input_size": 8}), ("mlp", {"input_size": 2, "hidden": [3]})])
def test_mean_and_std_reach_the_normalization(arch: str, extra: dict) -> None:
    model = create_model(arch, mean=[0.25], std=[0.5], **extra)
    assert model.normalize.mean.flatten().tolist() == [0.25] and model.normalize.std.flatten().tolist() == [0.5]


@pytest.mark.parametrize("kwargs,message", [
    ({"channels": [0]}, "channels must be a non-empty list of widths >= 1, got \\[0\\]"),
    ({"input_size": 3}, "input_size 3 is too small for 2 pooling stages; use at least 4"),
])
def test_cnn_rejects_bad_widths_and_sizes(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("cnn", **kwargs)


# ---------------------------------------------------------------- MLP


def test_mlp_counts_layers_and_units() -> None:
    # default 784 -> 256 -> 256 -> 10: 200960 + 65792 + 2570
    assert n_params(create_model("mlp")) == 269322
    model = create_model("mlp", KWTA_SPEC, input_size=2, hidden=[5, 3], num_classes=4)
    assert n_params(model) == (4 * 5 + 5) + (5 * 3 + 3) + (3 * 4 + 4)
    layers = list(kwta_layers(model).values())
    assert [type(m) for m in layers] == [KWTA, KWTA] and [m.num_units for m in layers] == [5, 3]
    with pytest.raises(ConfigError, match="hidden must be a non-empty list of widths >= 1, got \\[0\\]"):
        create_model("mlp", hidden=[0])


# ---------------------------------------------------------------- ResNet-18 (He et al. 2016, CIFAR variant)


def resnet18_params(w: int, c: int, k: int) -> int:
    """Worked out by hand: stem conv 9cw + BN 2w; the 8 basic blocks 2724 w^2 + 148 w (3x3 convs, BNs, three
    1x1 projection shortcuts with BN); linear head 8w*k + k."""
    return 9 * c * w + 2 * w + 2724 * w * w + 148 * w + 8 * w * k + k


def test_resnet18_parameter_counts() -> None:
    assert resnet18_params(64, 3, 10) == 11173962  # the published CIFAR ResNet-18 count (11.2M)
    assert n_params(create_model("resnet18", in_channels=3, input_size=32)) == 11173962
    assert n_params(create_model("resnet18", in_channels=3, input_size=8, width=4, num_classes=7)) == 44523
    assert n_params(create_model("resnet18", in_channels=1, input_size=8, width=2)) == resnet18_params(2, 1, 10)


def test_resnet18_stage_shapes_and_kwta_units() -> None:
    model = create_model("resnet18", KWTA_SPEC, in_channels=3, input_size=32, width=2).eval()
    shapes = []
    model.act1.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    for stage in model.layers:
        stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    model(torch.rand(1, 3, 32, 32))
    assert shapes == [(1, 2, 32, 32), (1, 2, 32, 32), (1, 4, 16, 16), (1, 8, 8, 8), (1, 16, 4, 4)]
    units = [m.num_units for m in kwta_layers(model).values()]
    assert units == [2] + [2] * 4 + [4] * 4 + [8] * 4 + [16] * 4  # stem + two per block


def test_resnet18_forward_matches_the_basic_block_definition() -> None:
    torch.manual_seed(1)
    model = create_model("resnet18", in_channels=3, input_size=16, width=2, num_classes=5, mean=MEAN3, std=STD3)
    randomize_batch_norm(model.eval())
    x = torch.rand(2, 3, 16, 16)  # 2x2 final maps: average pooling differs from max pooling
    out = F.relu(bn(F.conv2d(normalized(x), model.conv1.weight, padding=1), model.bn1))
    blocks = [b for stage in model.layers for b in stage]
    for b, stride in zip(blocks, [1, 1, 2, 1, 2, 1, 2, 1], strict=True):
        o = F.relu(bn(F.conv2d(out, b.conv1.weight, stride=stride, padding=1), b.bn1))
        o = bn(F.conv2d(o, b.conv2.weight, padding=1), b.bn2)
        short = out if stride == 1 else bn(F.conv2d(out, b.shortcut[0].weight, stride=stride), b.shortcut[1])
        out = F.relu(o + short)
    expected = F.linear(out.mean((2, 3)), model.fc.weight, model.fc.bias)
    assert torch.allclose(model(x), expected, atol=1e-5)


# ---------------------------------------------------------------- WRN (Zagoruyko & Komodakis 2016)


def test_wrn_parameter_counts() -> None:
    # WRN-10-1: stem 432; group 1 (no projection) 4672; group 2 14432; group 3 57536; final BN 128; fc 455
    assert n_params(create_model("wrn", in_channels=3, input_size=8, depth=10, widen=1, num_classes=7)) == 77655
    # WRN-10-2: stem 432; group 1 (projection 16->32) 14432; group 2 57536; group 3 229760; BN 256; fc 903
    assert n_params(create_model("wrn", in_channels=3, input_size=8, depth=10, widen=2, num_classes=7)) == 303319
    # WRN-28-10 on CIFAR-10: 36,479,194 parameters (36.5M)
    assert n_params(create_model("wrn", in_channels=3, input_size=32)) == 36479194


def test_wrn_group_shapes_and_kwta_units() -> None:
    model = create_model("wrn", KWTA_SPEC, in_channels=3, input_size=32, depth=10, widen=2).eval()
    shapes = []
    for group in model.groups:
        group.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    model(torch.rand(1, 3, 32, 32))
    assert shapes == [(1, 32, 32, 32), (1, 64, 16, 16), (1, 128, 8, 8)]
    units = [m.num_units for m in kwta_layers(model).values()]
    assert units == [16, 32, 32, 64, 64, 128, 128]  # act1 sees the block input, act2 its output; final act


def wrn_reference(model: nn.Module, x: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
    """Pre-activation wide block: BN-ReLU-conv3x3(stride)-BN-ReLU-dropout-conv3x3, plus the identity, or a 1x1
    projection of the pre-activated input when the shape changes (the reference implementation's convShortcut):
    with widen > 1, the first block of every group."""
    out = F.conv2d(normalized(x), model.conv1.weight, padding=1)
    for g, group in enumerate(model.groups):
        for j, b in enumerate(group):
            stride = 2 if g > 0 and j == 0 else 1
            pre = F.relu(bn(out, b.bn1))
            o = F.relu(bn(F.conv2d(pre, b.conv1.weight, stride=stride, padding=1), b.bn2))
            o = F.conv2d(F.dropout(o, dropout, training=dropout > 0), b.conv2.weight, padding=1)
            out = o + (F.conv2d(pre, b.shortcut.weight, stride=stride) if j == 0 else out)
    return F.linear(F.relu(bn(out, model.bn)).mean((2, 3)), model.fc.weight, model.fc.bias)


def test_wrn_forward_matches_the_wide_block_definition() -> None:
    torch.manual_seed(2)
    model = create_model("wrn", in_channels=3, input_size=8, depth=16, widen=2, num_classes=5, mean=MEAN3, std=STD3)
    randomize_batch_norm(model.eval())
    assert [b.shortcut is None for group in model.groups for b in group] == [False, True] * 3
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(model(x), wrn_reference(model, x), atol=1e-5)


def test_wrn_dropout_sits_between_the_two_convolutions() -> None:
    torch.manual_seed(3)
    model = create_model("wrn", in_channels=3, input_size=8, depth=10, widen=2, dropout=0.5, mean=MEAN3, std=STD3)
    randomize_batch_norm(model.eval())
    drops = [b.dropout for group in model.groups for b in group]
    assert all(isinstance(d, nn.Dropout) and d.p == 0.5 for d in drops)
    for d in drops:
        d.train()
    x = torch.rand(2, 3, 8, 8)
    torch.manual_seed(4)
    got = model(x)
    torch.manual_seed(4)
    assert torch.allclose(got, wrn_reference(model, x, dropout=0.5), atol=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    ({"depth": 4}, "depth must be 6n\\+4 with n >= 1 \\(10, 16, 28, 34, ...\\), got 4"),
    ({"input_size": 3}, "input_size must be >= 4 \\(two stride-2 groups\\), got 3"),
])
def test_wrn_rejects_too_shallow_or_too_small(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("wrn", in_channels=3, **{"input_size": 32, **kwargs})


def test_resnet_rejects_input_below_eight() -> None:
    with pytest.raises(ConfigError, match="input_size must be >= 8 \\(three stride-2 stages\\), got 7"):
        create_model("resnet18", in_channels=3, input_size=7)
