"""Xiao et al. (ICLR 2020) networks of the zoo: the key list of the released CIFAR-10 checkpoint, forward
equivalence with an independent functional re-implementation of their layers (Sparsify2D_vol / Sparsify2D /
Sparsify1D: ``k = int(ratio · size)``, ties kept by ``>=``) on random weights, and the registry entries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attacks.bpda_protocol import surrogate_backward, surrogate_layers
from kwta_robust.checkpoint import load_byo_model
from kwta_robust.errors import ConfigError
from kwta_robust.layers import KWTA2d
from kwta_robust.models import create_model
from kwta_robust.zoo import XiaoKWTA, XiaoKWTA2d, xiao_spcnn, xiao_spresnet18

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{name}": (() if name == "num_batches_tracked" else (channels,)) for name in BN}


def released_spresnet18_keys() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of ``kwta_spresnet18_0.1_cifar_adv.pth``: ``SparseResNet18(sparsities=[0.1]*4,
    sparse_func='vol')`` of kWTA/resnet.py (bias-free convs, ``shortcut`` = Sequential(conv1x1, BN) where the
    shape changes, ``linear`` 512 → 10); the Sparsify modules hold no state."""
    keys = {"conv1.weight": (64, 3, 3, 3), **_bn("bn1", 64)}
    stages = [(1, 64, 64), (2, 64, 128), (3, 128, 256), (4, 256, 512)]  # (stage, in planes, planes)
    for stage, in_planes, planes in stages:
        for block in (0, 1):
            p = f"layer{stage}.{block}"
            cin = in_planes if block == 0 else planes
            keys[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
            keys.update(_bn(f"{p}.bn1", planes))
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            keys.update(_bn(f"{p}.bn2", planes))
            if block == 0 and stage > 1:
                keys[f"{p}.shortcut.0.weight"] = (planes, cin, 1, 1)
                keys.update(_bn(f"{p}.shortcut.1", planes))
    keys.update({"linear.weight": (10, 512), "linear.bias": (10,)})
    return keys


def random_state(keys: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    """Random tensors of those shapes (BatchNorm variances positive, counters integer)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            scale = 0.2 if key.endswith("weight") and len(shape) > 1 else 0.5
            state[key] = torch.randn(shape, generator=gen) * scale
    return state


# --- an independent re-implementation of the original semantics ----------------------------------------------------


def ref_sparsify(x: Tensor, ratio: float, per_channel: bool = False) -> Tensor:
    """Xiao's Sparsify1D (2-D x), Sparsify2D_vol (4-D x) and Sparsify2D (``per_channel``): keep x where it is >= the
    k-th largest of its group, k = int(ratio · group size)."""
    groups = x.reshape(x.shape[0], x.shape[1], -1) if per_channel else x.reshape(x.shape[0], 1, -1)
    k = int(ratio * groups.shape[-1])
    kth = groups.sort(dim=-1, descending=True).values[..., k - 1 : k]
    return ((groups >= kth).to(x) * groups).reshape(x.shape)


def ref_bn(x: Tensor, s: dict, p: str) -> Tensor:
    return F.batch_norm(x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
                        False, 0.0, 1e-5)


def ref_spresnet18(x: Tensor, s: dict, ratio: float) -> Tensor:
    out = F.relu(ref_bn(F.conv2d(x, s["conv1.weight"], padding=1), s, "bn1"))
    for stage in range(1, 5):
        for block in (0, 1):
            p = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            h = ref_sparsify(
                ref_bn(F.conv2d(out, s[f"{p}.conv1.weight"], stride=stride, padding=1), s, f"{p}.bn1"), ratio)
            h = ref_bn(F.conv2d(h, s[f"{p}.conv2.weight"], padding=1), s, f"{p}.bn2")
            short = out
            if f"{p}.shortcut.0.weight" in s:
                short = ref_bn(F.conv2d(out, s[f"{p}.shortcut.0.weight"], stride=stride), s, f"{p}.shortcut.1")
            out = ref_sparsify(h + short, ratio)
    out = F.avg_pool2d(out, 4).flatten(1)
    return F.linear(out, s["linear.weight"], s["linear.bias"])


# --- tests ----------------------------------------------------------------------------------------------------------


def test_spresnet18_has_the_released_keys_and_loads_them(tmp_path) -> None:
    expected = released_spresnet18_keys()
    model = xiao_spresnet18(gamma=0.1)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    torch.save(random_state(expected), tmp_path / "kwta_spresnet18_0.1_cifar_adv.pth")  # as the notebook saved it
    loaded = load_byo_model("kwta_robust.zoo:xiao_spresnet18", tmp_path / "kwta_spresnet18_0.1_cifar_adv.pth",
                            factory_kwargs={"gamma": 0.1})
    assert loaded.metadata["weights_normalization"] == []
    assert not loaded.model.training and loaded.metadata["kwta_ratio"] == 0.1 and \
        loaded.metadata["num_kwta_layers"] == 16


def test_spresnet18_forward_equals_the_original_semantics_on_random_weights() -> None:
    state = random_state(released_spresnet18_keys(), seed=1)
    model = xiao_spresnet18(gamma=0.1)
    model.load_state_dict(state)
    model.eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, ref = model(x), ref_spresnet18(x, state, 0.1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert ours.argmax(1).tolist() == ref.argmax(1).tolist()


def test_layers_keep_ties_and_use_xiaos_k_rule() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-3, 4, (4, 5, 6, 6), generator=gen).float()  # 7 levels: many ties at every threshold
    for layer, per_channel in ((XiaoKWTA2d(ratio=0.3), False), (XiaoKWTA2d(ratio=0.3, mode="channel"), True)):
        assert torch.equal(layer(x), ref_sparsify(x, 0.3, per_channel))
    dense = torch.randint(-3, 4, (4, 40), generator=gen).float()
    assert torch.equal(XiaoKWTA(ratio=0.25)(dense), ref_sparsify(dense, 0.25))
    # k = int(0.4 · 5) = 2, the 2nd largest is 2: all three 2s tie with it and win
    assert XiaoKWTA(ratio=0.4)(torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0]])).tolist() == [[3.0, 2.0, 2.0, 2.0, 0.0]]
    # 0.29 · 100 = 28.999...: Xiao's int() gives 28 winners, the package's KWTA (floor with tolerance) 29
    distinct = torch.randperm(100, generator=gen).float().view(1, 1, 10, 10) + 1
    assert int((XiaoKWTA2d(ratio=0.29)(distinct) != 0).sum()) == 28
    assert int((KWTA2d(ratio=0.29)(distinct) != 0).sum()) == 29
    assert XiaoKWTA2d(ratio=0.001).effective_k(100) == 1  # Xiao's code fails here (topk(0)); one unit is kept
    with pytest.raises(ValueError, match="'volume' or 'channel'"):
        XiaoKWTA2d(ratio=0.1, mode="local")


def test_spcnn_keys_and_forward_with_per_channel_gates() -> None:
    model = xiao_spcnn(0.2, 0.1, func="reg", num_channels=(4, 4, 8, 8), hidden_size=30)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {"cnn.0.weight": (4, 1, 3, 3), "cnn.0.bias": (4,), "cnn.2.weight": (4, 4, 3, 3),
                      "cnn.2.bias": (4,), "cnn.4.weight": (8, 4, 3, 3), "cnn.4.bias": (8,),
                      "cnn.6.weight": (8, 8, 3, 3), "cnn.6.bias": (8,), "cnn.9.weight": (30, 392), "cnn.9.bias": (30,),
                      "cnn.11.weight": (10, 30), "cnn.11.bias": (10,)}
    s = model.state_dict()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    h = x
    for i, stride in ((0, 1), (2, 2), (4, 1), (6, 2)):
        h = ref_sparsify(F.conv2d(h, s[f"cnn.{i}.weight"], s[f"cnn.{i}.bias"], stride=stride, padding=1), 0.2, True)
    h = ref_sparsify(F.linear(h.flatten(1), s["cnn.9.weight"], s["cnn.9.bias"]), 0.1)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), F.linear(h, s["cnn.11.weight"], s["cnn.11.bias"]),
                                   rtol=1e-5, atol=1e-6)


def test_layers_take_part_in_bpda_and_the_forward_stays_exact() -> None:
    torch.manual_seed(0)
    model = xiao_spresnet18(gamma=0.1).eval()
    assert len(surrogate_layers(model)) == 16
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        exact = model(x)
    with surrogate_backward(model, "smooth", temperature=0.5):
        xg = x.clone().requires_grad_(True)
        out = model(xg)
        out[:, 0].sum().backward()
    assert torch.equal(out.detach(), exact) and float(xg.grad.abs().sum()) > 0


def test_registry_entries_relu_twin_and_bad_settings() -> None:
    relu = create_model("xiao-spresnet18", "relu", num_classes=10, in_channels=3, input_size=32)
    kwta = create_model("xiao-spresnet18", {"name": "kwta", "ratio": 0.2, "mode": "channel"},
                        in_channels=3, input_size=32)
    assert relu.state_dict().keys() == kwta.state_dict().keys() == released_spresnet18_keys().keys()
    assert all(layer.mode == "channel" and layer.ratio == 0.2 for layer in surrogate_layers(kwta).values())
    assert not surrogate_layers(relu)
    cnn = create_model("xiao-spcnn", {"name": "kwta", "ratio": 0.1}, input_size=28,
                       num_channels=[2, 2, 4, 4], hidden_size=8)
    assert isinstance(cnn.cnn[10], XiaoKWTA) and cnn.cnn[1].mode == "volume"
    with pytest.raises(ConfigError, match="input_size must be 32"):
        create_model("xiao-spresnet18", "relu", in_channels=3, input_size=28)
    with pytest.raises(ConfigError, match="no boosting"):
        create_model("xiao-spresnet18", {"name": "kwta", "ratio": 0.1, "boost_strength": 1.0},
                     in_channels=3, input_size=32)
    with pytest.raises(ConfigError, match="sparse_func: 'abs'"):
        xiao_spresnet18(0.1, sparse_func="abs")
    with pytest.raises(ConfigError, match="gamma: a kWTA ratio"):
        xiao_spresnet18(1.5)
