"""Model zoo: every registered architecture builds as a ReLU and a kWTA twin with the right output shape; specs
round-trip; normalization lives inside the model; convert_activations swaps ReLU <-> kWTA in any nn.Module
(torchvision's resnet18 included); describe_model / weight_sparsity measure the tensors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from kwta_robust.errors import ConfigError, RegistryError
from kwta_robust.layers import KWTA, KWTA2d, ActivationSpec, kwta_layers
from kwta_robust.models import (
    ModelSpec,
    available_models,
    convert_activations,
    create_model,
    describe_model,
    register_model,
    weight_sparsity,
)

KWTA_SPEC = ActivationSpec("kwta", ratio=0.1)

#: Small settings per architecture: (constructor kwargs, input shape).
SMALL = {
    "mlp": ({"in_channels": 1, "input_size": 8, "hidden": [16, 16]}, (3, 1, 8, 8)),
    "cnn": ({"in_channels": 1, "input_size": 28}, (3, 1, 28, 28)),
    "resnet18": ({"in_channels": 3, "input_size": 32, "width": 4}, (3, 3, 32, 32)),
    "wrn": ({"in_channels": 3, "input_size": 32, "depth": 10, "widen": 1}, (3, 3, 32, 32)),
}


#: The literature's architectures (kwta_robust.zoo; their layers are tested in test_zoo_*.py): small settings,
#: input shape, and the activation the kWTA variant reports (Xiao's ResNet keeps a ReLU after its stem).
ZOO = {
    "xiao-spresnet18": ({"in_channels": 3, "input_size": 32}, (2, 3, 32, 32), "mixed"),
    "xiao-spcnn": ({"input_size": 28, "num_channels": [2, 2, 4, 4], "hidden_size": 8}, (3, 1, 28, 28), "kwta"),
    "nupic-sparse-cnn": ({"input_size": 28, "cnn_out_channels": [4, 8], "linear_units": 20}, (3, 1, 28, 28), "kwta"),
    "nupic-gsc-sparse-cnn": ({"input_size": 32, "cnn_out_channels": [4, 8], "linear_units": 20},
                             (3, 1, 32, 32), "kwta"),
}


def test_required_architectures_are_registered() -> None:
    assert {"mlp", "cnn", "resnet18", "wrn"} | set(ZOO) <= set(available_models())
    assert set(available_models()) <= set(SMALL) | set(ZOO), "add small settings for every new architecture"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_architectures_build_with_relu_and_kwta(name: str) -> None:
    kwargs, shape, kwta_activation = ZOO[name]
    torch.manual_seed(0)
    for activation, expected in (("relu", "relu"), (KWTA_SPEC, kwta_activation)):
        model = create_model(name, activation, num_classes=7, **kwargs).eval()
        assert model(torch.rand(shape)).shape == (shape[0], 7)
        info = describe_model(model)
        assert info["activation"] == expected and info["num_params"] == sum(p.numel() for p in model.parameters())
        if expected != "relu":
            assert info["kwta_ratio"] == 0.1 and info["kwta_mode"] == "volume"


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("activation", ["relu", KWTA_SPEC, ActivationSpec("kwta", ratio=0.2, mode="local")])
def test_every_architecture_builds_with_relu_and_kwta(name: str, activation) -> None:
    kwargs, shape = SMALL[name]
    torch.manual_seed(0)
    model = create_model(name, activation, num_classes=7, **kwargs)
    x = torch.rand(shape)
    assert model(x).shape == (shape[0], 7)
    info = describe_model(model)
    if activation == "relu":
        assert not kwta_layers(model) and info["activation"] == "relu"
    else:
        assert info["activation"] == "kwta" and info["num_relu_layers"] == 0
        expected_mode = "dense" if name == "mlp" else activation.mode  # an MLP has dense kWTA layers only
        assert info["kwta_ratio"] == activation.ratio and info["kwta_mode"] == expected_mode
        spatial = [m for m in kwta_layers(model).values() if isinstance(m, KWTA2d)]
        assert all(m.mode == activation.mode for m in spatial)
    assert info["num_params"] == sum(p.numel() for p in model.parameters())


def test_cnn_takes_8x8_digits() -> None:
    model = create_model("cnn", KWTA_SPEC, in_channels=1, input_size=8)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ConfigError, match="input_size"):
        create_model("cnn", "relu", input_size=2)


def test_spec_round_trip_rebuilds_identical_model() -> None:
    spec = ModelSpec.from_args("cnn", KWTA_SPEC, in_channels=1, input_size=8, mean=[0.5], std=[0.25], channels=(4, 8))
    data = spec.to_dict()
    assert data["kwargs"]["activation"] == KWTA_SPEC.to_dict() and data["kwargs"]["channels"] == [4, 8]
    again = ModelSpec.from_dict(data)
    assert again == spec
    torch.manual_seed(1)
    a = spec.build()
    b = again.build()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(a(x), b(x))


def test_normalization_is_inside_the_model() -> None:
    model = create_model("mlp", "relu", in_channels=3, input_size=2, hidden=[4],
                         mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 2.0])
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())
    x = torch.rand(2, 3, 2, 2)
    expected = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.5, 2.0]).view(1, 3, 1, 1)
    assert torch.allclose(model.normalize(x), expected)
    with pytest.raises(ConfigError, match="one value per input channel"):
        create_model("mlp", "relu", in_channels=3, input_size=2, mean=[0.1], std=[1.0])


def test_bad_model_arguments_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown architecture 'nope'"):
        create_model("nope")
    with pytest.raises(ConfigError, match="unknown argument 'depth'"):
        create_model("cnn", depth=3)
    with pytest.raises(ConfigError, match="k_ratio"):
        create_model("cnn", "kwta")
    with pytest.raises(ConfigError, match="depth must be 6n\\+4"):
        create_model("wrn", "relu", in_channels=3, input_size=32, depth=11)


def test_register_model_requires_common_arguments() -> None:
    with pytest.raises(RegistryError, match="^arch: architecture .broken-test-arch.: its factory must accept"):
        register_model("broken-test-arch")(lambda activation: nn.Identity())
    assert "broken-test-arch" not in available_models()


def test_convert_relu_to_kwta_and_back_on_own_model() -> None:
    torch.manual_seed(2)
    relu_model = create_model("cnn", "relu", input_size=8)
    x = torch.rand(4, 1, 8, 8)
    reference = relu_model(x)
    widths = [m.out_channels for m in relu_model.features if isinstance(m, nn.Conv2d)]
    widths.append(relu_model.classifier[1].out_features)
    converted = convert_activations(relu_model, ActivationSpec("kwta", ratio=0.1, mode="channel", boost_strength=0.5))
    layers = kwta_layers(converted)
    assert len(layers) == 3
    assert [type(m) for m in layers.values()] == [KWTA2d, KWTA2d, KWTA]
    assert [getattr(m, "num_units") for m in layers.values()] == widths  # inferred channel/feature counts
    assert converted(x).shape == (4, 10)
    back = convert_activations(converted, "relu")
    assert not kwta_layers(back) and describe_model(back)["num_relu_layers"] == 3
    assert torch.equal(back(x), reference)  # same weights, same activations → same logits


def test_convert_torchvision_resnet18_both_ways() -> None:
    torch.manual_seed(3)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    reference = model(x)
    spec = ActivationSpec("kwta", ratio=0.2, boost_strength=1.0)
    convert_activations(model, spec)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    # torchvision shares one ReLU per block; the sharing is kept (1 stem + 8 blocks = 9 kWTA modules)
    assert len(kwta_layers(model)) == 9
    assert model.layer1[0].relu.num_units == 64 and model.layer4[1].relu.num_units == 512
    assert model(x).shape == (2, 10)
    convert_activations(model, "relu")
    assert not kwta_layers(model)
    assert torch.equal(model(x), reference)


def test_convert_with_example_input_infers_shapes_exactly() -> None:
    model = nn.Sequential(nn.ReLU(), nn.Conv2d(2, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 6), nn.ReLU())
    with pytest.raises(ConfigError, match="example_input"):
        convert_activations(model, ActivationSpec("kwta", k=2, mode="local"))
    model.train()
    convert_activations(model, ActivationSpec("kwta", k=2, mode="local", boost_strength=1.0),
                        example_input=torch.rand(2, 2, 6, 6))
    assert model.training and all(m.training for m in model.modules())  # flags restored after the shape pass
    assert isinstance(model[0], KWTA2d) and model[0].num_units == 2
    assert isinstance(model[2], KWTA2d) and model[2].num_units == 5
    assert isinstance(model[5], KWTA) and model[5].num_units == 6
    assert model(torch.rand(2, 2, 6, 6)).shape == (2, 6)


def test_describe_and_weight_sparsity_measure_the_tensors() -> None:
    model = create_model("mlp", KWTA_SPEC, in_channels=1, input_size=4, hidden=[10])
    with torch.no_grad():
        model.net[1].weight[:5] = 0.0  # 5 of 10 rows of the [10, 16] weight: 80 zeros
    sparsity = weight_sparsity(model)
    assert sparsity["layers"]["net.1"] == 0.5
    assert sparsity["layers"]["net.3"] == 0.0
    assert sparsity["zeros"] == 80 and sparsity["total"] == 10 * 16 + 10 * 10
    assert sparsity["overall"] == pytest.approx(80 / 260)
    info = describe_model(model)
    assert info["weight_sparsity"] == sparsity
    assert info["kwta_layers"]["net.2"]["ratio"] == 0.1 and info["kwta_mode"] == "dense"
    assert weight_sparsity(nn.Sequential(nn.ReLU()))["overall"] == 0.0
