"""One reading of a factory's signature behind every unknown-name check (:func:`attacks.errors.unknown_names`): an
attack's or noise probe's parameters, an architecture's ``arch_kwargs`` and a model factory's ``--factory-kwargs``.
The architecture check tested ``key in signature.parameters``, so a name the factory takes only by position or as
its ``*args`` passed the check and the build failed later with Python's ``TypeError``."""

from __future__ import annotations

import pytest
from torch import nn

from attacks.errors import keyword_names, unknown_names
from kwta_robust.errors import CheckpointError, ConfigError
from kwta_robust.factory_args import check_factory_arguments
from kwta_robust.models.registry import REGISTRY, ModelSpec, register_model


def star(activation, num_classes, in_channels, input_size, mean, std, *layers, depth=1):  # noqa: ANN001, ANN002, ANN202
    """An architecture that takes ``layers`` only by position (its ``*layers``)."""
    return nn.Linear(in_channels * input_size * input_size, num_classes)


def test_keyword_names_and_unknown_names_read_the_signature() -> None:
    def f(a, /, b, *c, d=1, **e):  # noqa: ANN001, ANN002, ANN003, ANN202
        return None

    def g(a, /, b, *c, d=1):  # noqa: ANN001, ANN002, ANN202
        return None

    assert keyword_names(f) is None and unknown_names(f, ["zz"]) == []  # **e takes any name
    assert keyword_names(g) == ["b", "d"]
    assert unknown_names(g, ["d", "a", "c", "b", "x"]) == ["a", "c", "x"]  # in the order given
    assert keyword_names(min) is None  # no signature to read: the call says what it refuses


def test_architecture_refuses_a_name_it_takes_only_by_position(request: pytest.FixtureRequest) -> None:
    register_model("edges-star")(star)
    request.addfinalizer(lambda: REGISTRY.unregister("edges-star"))
    with pytest.raises(ConfigError) as info:
        ModelSpec.from_args("edges-star", layers=3)
    assert str(info.value) == "arch 'edges-star': unknown argument 'layers'; accepted: depth"
    assert ModelSpec.from_args("edges-star", input_size=2, depth=2).build().weight.shape == (10, 4)


def test_model_factory_names_the_same_mistake_the_same_way() -> None:
    with pytest.raises(CheckpointError) as info:
        check_factory_arguments("m:star", star, {"activation": "relu", "num_classes": 10, "in_channels": 1,
                                                 "input_size": 2, "mean": None, "std": None, "layers": 3})
    assert str(info.value) == ("model factory 'm:star': unknown argument 'layers' (it takes it only by position); "
                               "accepted: activation, num_classes, in_channels, input_size, mean, std, depth "
                               "(--factory-kwargs)")
