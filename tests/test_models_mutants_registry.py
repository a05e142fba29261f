"""Mutation round on models/registry.py (Normalize, ModelSpec, create_model) and models/describe.py: error
messages naming the field, specs that are copies (never aliases), plain-data conversion, and descriptions
checked against hand-built models whose activations, kWTA settings and parameter counts are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kwta_robust.errors import ConfigError, RegistryError
from kwta_robust.layers import KWTA, KWTA2d, ActivationSpec
from kwta_robust.models import REGISTRY, ModelSpec, Normalize, create_model, describe_model, register_model
from kwta_robust.models.registry import _plain

# ---------------------------------------------------------------- Normalize


def test_normalize_checks_std_and_its_length() -> None:
    with pytest.raises(ConfigError, match="std values must be > 0"):
        Normalize(1, [0.0], [0.0])
    with pytest.raises(ConfigError, match="one value per input channel \\(2\\)"):
        Normalize(2, [0.1, 0.2], [1.0])


def test_normalize_buffers_and_repr() -> None:
    assert set(Normalize(1, [0.25], [0.5]).state_dict()) == {"mean", "std"}
    assert not Normalize(1, [0.25], [0.5], persistent=False).state_dict()
    assert Normalize(1, [0.25], [0.5]).extra_repr() == "mean=[0.25], std=[0.5]"


def test_numpy_arrays_and_bare_numbers_for_mean_std_are_one_line_errors() -> None:
    # fixed: a numpy array raised a raw "ValueError: can only convert an array of size 1 to a Python scalar" and a
    # bare number a raw "TypeError: 'float' object is not iterable"
    with pytest.raises(ConfigError, match="^model: argument mean must be plain data .*, got ndarray$"):
        create_model("mlp", in_channels=3, input_size=2, hidden=[3], mean=np.array([0.1, 0.2, 0.3]), std=[1.0] * 3)
    with pytest.raises(ConfigError, match="^model: argument hidden must be plain data .*, got ndarray$"):
        create_model("mlp", input_size=2, hidden=np.array([3, 4]))
    with pytest.raises(ConfigError, match="^model: mean/std need one value per input channel \\(1\\), got mean=0.5"):
        create_model("mlp", input_size=2, hidden=[3], mean=0.5, std=[1.0])
    model = create_model("mlp", input_size=2, hidden=[np.int64(3)], mean=[np.float64(0.25)], std=[1.0])
    assert model.normalize.mean.flatten().tolist() == [0.25] and model.net[1].out_features == 3


# ---------------------------------------------------------------- registration and arguments


def test_a_factory_missing_one_common_argument_is_refused() -> None:
    def no_std(activation, num_classes, in_channels, input_size, mean):  # noqa: ANN001, ANN202
        return nn.Identity()

    with pytest.raises(RegistryError, match="its factory must accept std \\(create_model passes"):
        register_model("mutants-no-std")(no_std)
    assert "mutants-no-std" not in REGISTRY.names()


def test_a_factory_with_var_keywords_takes_any_argument(request: pytest.FixtureRequest) -> None:
    def any_kw(activation, num_classes, in_channels, input_size, mean, std, **kw):  # noqa: ANN001, ANN003, ANN202
        return nn.Linear(in_channels * input_size * input_size, num_classes)

    register_model("mutants-any-kw")(any_kw)
    request.addfinalizer(lambda: REGISTRY.unregister("mutants-any-kw"))
    spec = ModelSpec.from_args("mutants-any-kw", input_size=2, extra={"a": (1, 2)})
    assert spec.kwargs["extra"] == {"a": [1, 2]}
    assert spec.build().weight.shape == (10, 4)


@pytest.mark.parametrize("value", [True, 0, 2.0])
def test_counts_must_be_integers_of_at_least_one(value) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=f"model: num_classes must be an integer >= 1, got {value!r}"):
        create_model("mlp", num_classes=value)


def test_unknown_argument_lists_only_the_architecture_own_arguments() -> None:
    with pytest.raises(ConfigError, match="^arch 'mlp': unknown argument 'width'; accepted: hidden$"):
        create_model("mlp", width=3)


def test_unknown_activation_field_is_named() -> None:
    with pytest.raises(ConfigError, match="activation: unknown field 'bogus'; valid fields: name, ratio"):
        create_model("mlp", {"name": "kwta", "ratio": 0.1, "bogus": 1})


def test_plain_data_conversion() -> None:
    assert _plain({1: [2, (3, 4)], "t": torch.tensor(0.5)}, "x") == {"1": [2, [3, 4]], "t": 0.5}
    with pytest.raises(ConfigError, match="argument mean must be plain data .* got Tensor"):
        _plain(torch.tensor([1.0, 2.0]), "mean")
    with pytest.raises(ConfigError, match="argument opts.b must be plain data"):
        _plain({"a": 1, "b": object()}, "opts")


# ---------------------------------------------------------------- ModelSpec


def test_spec_defaults_and_mean_std_order() -> None:
    spec = ModelSpec.from_args("mlp", mean=[0.25], std=[0.5], hidden=[3])
    assert spec.kwargs["mean"] == [0.25] and spec.kwargs["std"] == [0.5]
    assert (spec.kwargs["in_channels"], spec.kwargs["input_size"]) == (1, 28)
    plain = ModelSpec("mlp", {"num_classes": 2, "in_channels": 1, "input_size": 2, "hidden": [3]})
    model = plain.build()  # no activation recorded: ReLU
    assert describe_model(model)["activation"] == "relu" and plain.activation.name == "relu"


def test_specs_are_copies_never_aliases() -> None:
    spec = ModelSpec.from_args("mlp", hidden=[3])
    kwta = spec.with_activation({"name": "kwta", "ratio": 0.1})
    assert spec.kwargs["activation"]["name"] == "relu" and kwta.kwargs["activation"]["ratio"] == 0.1
    data = spec.to_dict()
    data["kwargs"]["hidden"].append(9)
    assert spec.kwargs["hidden"] == [3]


@pytest.mark.parametrize("data", [
    {"arch": "mlp", "kwargs": {}, "extra": 1},
    {"arch": "mlp", "kwargs": [1]},
    {"arch": "mlp"},
])
def test_spec_from_dict_needs_exactly_arch_and_kwargs(data: dict) -> None:
    with pytest.raises(ConfigError, match="model_spec: expected a mapping with keys 'arch' and 'kwargs'"):
        ModelSpec.from_dict(data)


# ---------------------------------------------------------------- describe_model


def test_describe_activation_kinds() -> None:
    assert describe_model(nn.Sequential(nn.ReLU(), KWTA(ratio=0.5)))["activation"] == "mixed"
    assert describe_model(nn.Sequential(nn.Linear(2, 2)))["activation"] == "none"
    assert describe_model(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))["activation"] == "relu"


def test_describe_summaries_are_none_when_layers_disagree() -> None:
    info = describe_model(nn.Sequential(KWTA(ratio=0.1), KWTA(ratio=0.2)))
    assert info["kwta_ratio"] is None and info["kwta_k"] is None and info["kwta_mode"] == "dense"
    info = describe_model(nn.Sequential(KWTA2d(k=3, mode="channel"), KWTA(k=3)))
    assert info["kwta_k"] == 3 and info["kwta_ratio"] is None and info["kwta_mode"] == "channel"


def test_describe_reports_boost_and_inference_factor_separately() -> None:
    spec = ActivationSpec("kwta", ratio=0.2, boost_strength=0.5, k_inference_factor=1.5)
    info = describe_model(create_model("mlp", spec, input_size=2, hidden=[4]))
    assert info["boost_strength"] == 0.5 and info["k_inference_factor"] == 1.5
    assert info["kwta_ratio"] == 0.2 and info["kwta_k"] is None


def test_describe_counts_frozen_parameters_too() -> None:
    model = create_model("mlp", input_size=2, hidden=[3], num_classes=2).requires_grad_(False)
    assert describe_model(model)["num_params"] == (4 * 3 + 3) + (3 * 2 + 2)
