"""Mutation round on Xiao et al.'s zoo networks (``kwta_robust.zoo.xiao``), the zoo's input normalization
(``kwta_robust.zoo.common``) and ``kwta_robust.models.convert``: expected values are worked out by hand from Xiao's
definitions (``Sparsify*``: keep entries ``>=`` the k-th largest, ``k = int(ratio · size)``; ``Sparsify*_kactive``:
an absolute k) and from the shapes each layer sees, never read off this package's output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.errors import ConfigError
from kwta_robust.layers import KWTA, KWTA2d, ActivationSpec, kwta_layers
from kwta_robust.models import convert_activations, create_model
from kwta_robust.zoo import XiaoKWTA, XiaoKWTA2d, xiao_spcnn, xiao_spresnet18
from kwta_robust.zoo.common import input_normalization
from kwta_robust.zoo.xiao import SparseBasicBlock

# --- Xiao's layers ---------------------------------------------------------------------------------------------------


def test_absolute_k_is_capped_at_the_group_size() -> None:
    x = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
    assert XiaoKWTA(k=10)(x).tolist() == x.tolist()  # Sparsify1D_kactive with k > size keeps everything
    assert XiaoKWTA(k=10).effective_k(4) == 4 and XiaoKWTA(k=2).effective_k(4) == 2
    assert XiaoKWTA(k=2)(x).tolist() == [[0.0, 0.0, 2.0, 0.5]]
    maps = torch.tensor([4.0, 1.0, 3.0, 2.0]).view(1, 1, 2, 2)
    assert XiaoKWTA2d(k=3)(maps).flatten().tolist() == [4.0, 0.0, 3.0, 2.0]


def test_channel_mode_thresholds_each_channel_and_keeps_ties() -> None:
    maps = torch.tensor([[[[5.0, 1.0], [1.0, 0.0]], [[-1.0, -2.0], [-2.0, -3.0]]]])  # 2 channels of 2 × 2
    # 'reg' with ratio 0.5: k = int(0.5 · 4) = 2 per channel; channel 0's 2nd largest is 1 (tied twice),
    # channel 1's is -2 (tied twice): three entries survive in each channel, negatives included
    expected = [[[[5.0, 1.0], [1.0, 0.0]], [[-1.0, -2.0], [-2.0, 0.0]]]]
    assert XiaoKWTA2d(ratio=0.5, mode="channel")(maps).tolist() == expected
    # 'vol': k = int(0.5 · 8) = 4 over the volume: 5, 1, 1, 0 win, channel 1 is switched off
    assert XiaoKWTA2d(ratio=0.5)(maps).tolist() == [[[[5.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]]


def test_describe_names_xiaos_k_rule() -> None:
    assert XiaoKWTA2d(ratio=0.1).describe()["k_rule"] == "int(ratio*size)"
    assert XiaoKWTA(k=3).describe()["k_rule"] == "int(ratio*size)"


# --- factories: ratios, defaults, errors ---------------------------------------------------------------------------


def test_ratio_bounds_of_the_factories() -> None:
    for bad in (True, 0.0, -0.1, 1.01, "0.1"):
        with pytest.raises(ConfigError, match="sp1: a kWTA ratio"):
            xiao_spcnn(bad, num_channels=(1, 1, 1, 1), hidden_size=2)
    full = xiao_spcnn(1.0, num_channels=(1, 1, 2, 2), hidden_size=3)  # ratio 1 keeps every unit: a linear network
    assert all(layer.ratio == 1.0 for layer in kwta_layers(full).values())
    with pytest.raises(ConfigError, match="sp2: a kWTA ratio"):
        xiao_spcnn(0.1, 0.0, num_channels=(1, 1, 1, 1), hidden_size=2)


def test_spresnet18_sparsities_per_stage_and_their_errors() -> None:
    model = xiao_spresnet18(sparsities=(0.1, 0.2, 0.3, 0.4))
    for stage, ratio in zip(range(1, 5), (0.1, 0.2, 0.3, 0.4)):
        layer = getattr(model, f"layer{stage}")
        assert {b.sparse1.ratio for b in layer} == {b.sparse2.ratio for b in layer} == {ratio}
    with pytest.raises(ConfigError, match="one ratio per stage"):
        xiao_spresnet18(sparsities=(0.1, 0.1, 0.1))
    with pytest.raises(ConfigError, match=r"^sparsities: a kWTA ratio"):
        xiao_spresnet18(sparsities=(0.1, 0.1, 0.1, 1.5))
    relu = xiao_spresnet18(sparse_func="relu")
    assert not kwta_layers(relu) and isinstance(relu.layer3[1].sparse2, nn.ReLU)
    channel = xiao_spresnet18(0.1, sparse_func="reg")
    assert {layer.mode for layer in kwta_layers(channel).values()} == {"channel"}


def test_spcnn_defaults_are_xiaos_mnist_network() -> None:
    with torch.device("meta"):  # the 20,000-unit hidden layer, without allocating it
        model = xiao_spcnn(0.1)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["cnn.9.weight"] == (20000, 7 * 7 * 64) and shapes["cnn.11.weight"] == (10, 20000)
    assert [f"cnn.{i}.bias" in shapes for i in (0, 2, 4, 6)] == [True] * 4  # bias=True
    assert [model.cnn[i].mode for i in (1, 3, 5, 7)] == ["volume"] * 4 and model.cnn[10].ratio == 0.1
    with pytest.raises(ConfigError, match="four conv widths"):
        xiao_spcnn(0.1, num_channels=(2, 2, 4))


def test_spcnn_odd_input_sizes_round_the_strided_maps_up() -> None:
    # 3×3 convolutions with stride 2 and padding 1: 30 → 15 → 8, 29 → 15 → 8, 28 → 14 → 7
    for size, side in ((30, 8), (29, 8), (28, 7)):
        model = xiao_spcnn(0.5, num_channels=(1, 1, 2, 3), hidden_size=4, input_size=size)
        assert model.cnn[9].in_features == side * side * 3
        assert model.eval()(torch.rand(2, 1, size, size)).shape == (2, 10)


# --- Xiao's block with relu=True -----------------------------------------------------------------------------------


def _sparsify_vol(x: Tensor, ratio: float) -> Tensor:
    flat = x.reshape(x.shape[0], -1)
    kth = flat.sort(dim=1, descending=True).values[:, int(ratio * flat.shape[1]) - 1 :][:, :1]
    return torch.where(flat >= kth, flat, torch.zeros(())).view_as(x)


def test_block_with_relu_applies_it_before_both_gates() -> None:
    torch.manual_seed(0)
    block = SparseBasicBlock(3, 3, 1, lambda: XiaoKWTA2d(ratio=0.9), use_relu=True, bias=False).eval()
    x = torch.randn(2, 3, 4, 4)
    s = block.state_dict()

    def bn(h: Tensor, p: str) -> Tensor:
        return F.batch_norm(h, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
                            False, 0.0, 1e-5)

    h = _sparsify_vol(F.relu(bn(F.conv2d(x, s["conv1.weight"], padding=1), "bn1")), 0.9)
    expected = _sparsify_vol(F.relu(bn(F.conv2d(h, s["conv2.weight"], padding=1), "bn2") + x), 0.9)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
    assert bool((block(x) >= 0).all())  # ratio 0.9 keeps negatives: only the ReLUs remove them


# --- registry entries ----------------------------------------------------------------------------------------------


def test_registry_absolute_k_reaches_every_gate_and_bad_settings_fail() -> None:
    model = create_model("xiao-spcnn", {"name": "kwta", "k": 3}, num_channels=[2, 2, 4, 4], hidden_size=8)
    gates = list(kwta_layers(model).values())
    assert len(gates) == 5 and all(g.k == 3 and g.ratio is None for g in gates)
    assert isinstance(model.cnn[10], XiaoKWTA) and model.cnn[1].mode == "volume"
    with pytest.raises(ConfigError, match="no boosting and no k_inference_factor"):
        create_model("xiao-spcnn", {"name": "kwta", "ratio": 0.1, "k_inference_factor": 1.5})
    with pytest.raises(ConfigError, match="kWTA mode 'local' is not Xiao's"):
        create_model("xiao-spcnn", {"name": "kwta", "ratio": 0.1, "mode": "local"})


# --- zoo normalization ---------------------------------------------------------------------------------------------


def test_normalization_with_only_a_mean_or_only_a_std() -> None:
    x = torch.full((1, 1, 2, 2), 1.0)
    assert input_normalization(1, None, None) is None
    assert input_normalization(1, (0.25,), None)(x).flatten().tolist() == [0.75] * 4  # std defaults to 1
    assert input_normalization(1, None, (0.5,))(x).flatten().tolist() == [2.0] * 4  # mean defaults to 0
    assert input_normalization(1, (0.25,), (0.5,)).state_dict() == {}  # non-persistent: no checkpoint keys


# --- convert_activations -------------------------------------------------------------------------------------------


def test_shape_pass_leaves_batchnorm_statistics_and_hooks_alone() -> None:
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), relu).train()
    convert_activations(model, ActivationSpec("kwta", ratio=0.5), example_input=torch.rand(4, 1, 5, 5) + 1.0)
    bn = model[1]
    assert bn.training and int(bn.num_batches_tracked) == 0
    assert bn.running_mean.tolist() == [0.0, 0.0] and bn.running_var.tolist() == [1.0, 1.0]
    assert isinstance(model[2], KWTA2d) and len(relu._forward_pre_hooks) == 0


def test_shapes_from_group_norm_and_multi_dim_layer_norm() -> None:
    spec = ActivationSpec("kwta", ratio=0.5, boost_strength=1.0)
    grouped = convert_activations(nn.Sequential(nn.Conv2d(1, 6, 3), nn.GroupNorm(2, 6), nn.ReLU()), spec)
    assert isinstance(grouped[2], KWTA2d) and grouped[2].num_units == 6
    layered = nn.Sequential(nn.Linear(3, 20), nn.Unflatten(1, (4, 5)), nn.LayerNorm((4, 5)), nn.Flatten(), nn.ReLU())
    convert_activations(layered, spec)
    assert isinstance(layered[4], KWTA) and layered[4].num_units == 20 and layered[4].duty_cycle.shape == (20,)


class _Shared(nn.Module):
    """One ReLU used on two inputs (``second`` given: a 4-D map of other width, else a flat vector)."""

    def __init__(self, second: str) -> None:
        super().__init__()
        self.conv1, self.act = nn.Conv2d(1, 4, 1), nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 1)
        self.fc = nn.Linear(4 * 2 * 2, 5)
        self.second = second

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.conv1(x))
        if self.second == "maps":
            return self.act(self.conv2(h))
        return self.act(self.fc(h.flatten(1)))


def test_shared_activation_of_several_shapes() -> None:
    x = torch.rand(2, 1, 2, 2)
    maps = _Shared("maps")
    convert_activations(maps, ActivationSpec("kwta", ratio=0.25), example_input=x)  # no boosting: any width works
    assert isinstance(maps.act, KWTA2d) and maps.act.mode == "volume"
    mixed = _Shared("flat")
    convert_activations(mixed, ActivationSpec("kwta", ratio=0.25), example_input=x)
    assert isinstance(mixed.act, KWTA)  # dense over the flattened sample = volume mode on maps
    h = torch.tensor([4.0, -1.0, 2.0, 0.5] * 4).view(1, 4, 2, 2)  # k = 0.25 · 16 = 4: the four 4.0s win
    assert mixed.act(h).flatten().tolist() == [4.0, 0.0, 0.0, 0.0] * 4
    with pytest.raises(ConfigError, match="different shapes"):
        convert_activations(_Shared("flat"), ActivationSpec("kwta", ratio=0.25, mode="channel"), example_input=x)


def test_model_that_is_an_activation_and_unused_activations() -> None:
    new = convert_activations(nn.ReLU(), ActivationSpec("kwta", k=2), example_input=torch.rand(3, 5))
    assert isinstance(new, KWTA) and new(torch.tensor([[1.0, 5.0, 3.0, -2.0, 0.0]])).tolist() == [[0, 5.0, 3.0, 0, 0]]
    model = _Shared("maps")
    model.spare = nn.ReLU()  # registered, never called
    with pytest.raises(ConfigError, match="'spare' was not used in the forward pass"):
        convert_activations(model, ActivationSpec("kwta", k=2), example_input=torch.rand(2, 1, 2, 2))


def test_new_layers_go_to_the_device_of_the_parameters() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()).to("meta")
    convert_activations(model, ActivationSpec("kwta", ratio=0.5, boost_strength=1.0))
    assert model[1].duty_cycle.device.type == "meta"
    back = convert_activations(nn.Sequential(nn.Linear(3, 4), XiaoKWTA(k=2)), "relu")
    assert isinstance(back[1], nn.ReLU)  # subclasses of KWTA are converted back too
