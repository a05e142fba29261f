"""Edges of the model checks before any work (:mod:`kwta_robust.model_checks`) that the mutation-testing round
found unguarded: a model of exactly the allowed size, weights on ``meta``, logits for another number of inputs,
mixed parameter precisions, a convolution reading another image size."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.errors import ConfigError
from kwta_robust.model_checks import (check_finite, check_size, describe_expected_input, meta_model, other_precision,
                                      probe_model, unwrap_advice, warn_broadcast_channels)
from kwta_robust.models import ModelSpec

torch.set_num_threads(1)


def spec() -> ModelSpec:
    return ModelSpec.from_args("mlp", activation={"name": "relu"}, num_classes=10, in_channels=1, input_size=28,
                               hidden=[16])


def test_a_model_of_exactly_the_allowed_size_is_built() -> None:
    count = sum(p.numel() for p in spec().build().parameters())
    check_size(spec(), "model", max_parameters=count)
    with pytest.raises(ConfigError, match=f"would have {count:,} parameters .* more than the {count - 1:,} allowed"):
        check_size(spec(), "model", max_parameters=count - 1)


def test_weights_on_meta_are_not_read_for_nan() -> None:
    skeleton = meta_model(spec())
    assert skeleton is not None
    check_finite(skeleton, "model")  # nothing to read on meta: no error, no "Cannot copy out of meta tensor"


class FirstRowOnly(nn.Module):
    """Logits for the first input only, whatever the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))[:1]


def test_logits_for_another_number_of_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"returns shape \[1, 3\] for 2 inputs, expected logits \[N, 3\]"):
        probe_model(FirstRowOnly(), torch.rand(2, 1, 2, 2), 3, "model")


def test_a_model_of_mixed_precisions_has_no_one_other_precision() -> None:
    mixed = nn.Sequential(nn.Linear(2, 2).to(torch.float64), nn.Linear(2, 2).to(torch.float16))
    assert other_precision(mixed, torch.rand(1, 2)) is None
    assert other_precision(nn.Linear(2, 2).to(torch.float64), torch.rand(1, 2)) == "float64"


def test_a_convolution_reading_another_image_size_is_no_channel_broadcast(caplog: pytest.LogCaptureFixture) -> None:
    """The first convolution takes 3 channels of 16x16 maps while the images are 1x8x8: not the images broadcast."""
    first = {"name": "conv", "in_channels": 3, "shape": (4, 3, 16, 16)}
    with caplog.at_level("WARNING", logger="kwta_robust.model_checks"):
        warn_broadcast_channels(first, torch.rand(4, 1, 8, 8), "model", "mnist5k")
    assert caplog.text == ""
    with caplog.at_level("WARNING", logger="kwta_robust.model_checks"):
        warn_broadcast_channels({**first, "shape": (4, 3, 8, 8)}, torch.rand(4, 1, 8, 8), "model", "mnist5k")
    assert "takes 3 channels but mnist5k images have 1" in caplog.text


class GreyToColour(nn.Module):
    """Broadcasts grey images to 3 channels, then two convolutions (3 → 4 → 4 channels, the size kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = self.second(self.first(x.expand(-1, 3, -1, -1)))
        return self.head(h.mean(dim=(2, 3)))


def test_the_broadcast_warning_names_the_first_convolution_called(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="kwta_robust.model_checks"):
        probe_model(GreyToColour(), torch.rand(2, 1, 8, 8), 10, "model", data_name="mnist5k")
    assert "its first convolution (first) takes 3 channels but mnist5k images have 1" in caplog.text


class Block(nn.Module):
    """A module with a child that raises in its own code, after the child ran."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        self.fc(x.flatten(1))
        raise ValueError("block rejects its input")


def test_an_error_between_the_children_of_a_module_names_no_leaf() -> None:
    with pytest.raises(ConfigError, match="ValueError: block rejects its input; evaluate it on the data") as info:
        probe_model(nn.Sequential(Block()), torch.rand(2, 1, 2, 2), 3, "model")
    assert "raised in module" not in str(info.value)


def test_an_expected_input_needs_both_channels_and_size() -> None:
    assert describe_expected_input({"kwargs": {"in_channels": 3}}) is None
    assert describe_expected_input({"kwargs": {"in_channels": 3, "input_size": 32}}) == "[N, 3, 32, 32]"


def test_a_tuple_whose_first_item_is_not_logits_is_not_told_to_take_it() -> None:
    assert "forward returns the logits among its 2 items" in unwrap_advice((torch.zeros(2, 3, 4), torch.zeros(2, 3)))
    assert "forward returns out[0]" in unwrap_advice((torch.zeros(2, 3), torch.zeros(2, 3, 4)))


class Infinite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1)) + float("inf")


def test_infinite_logits_are_refused() -> None:
    with pytest.raises(ConfigError, match="returns NaN or infinite logits on clean"):
        probe_model(Infinite(), torch.rand(2, 1, 2, 2), 3, "model")
