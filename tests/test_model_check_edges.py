"""Edges of the model checks before any work (:mod:`kwta_robust.model_checks`) that the mutation-testing round
found unguarded: a model of exactly the allowed size, weights on ``meta``, logits for another number of inputs,
mixed parameter precisions, a convolution reading another image size; and two kinds of a user's model found by
running odd models through ``evaluate``: a forward writing to its input in place, one failing only with gradients."""

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


class NormalizesInPlace(nn.Module):
    """A user's model that normalizes its input in place, as ``x.sub_(0.5)`` or ``x.clamp_(0, 1)`` do."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op, self.fc = op, nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        if self.op == "sub":
            x.sub_(0.5)
        elif self.op == "clamp":
            x.clamp_(0, 1)  # the inputs are in [0, 1] already: the values stay, the write is still there
        elif self.op == "clone":
            x = x.clone()
            x.sub_(0.5)  # on its own copy: fine
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("op", ["sub", "clamp"])
def test_a_forward_writing_to_its_input_in_place_is_refused(op: str) -> None:
    # Before: the check passed; the first gradient probe then crashed with a raw "a leaf Variable that requires grad
    # is being used in an in-place operation", and attacks whose inputs are not leaves had x_adv rewritten each call.
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(ConfigError, match=r"^model: its forward writes to its input in place \(e\.g\. x\.sub_\(mean\), "
                                          r"x\.clamp_\(0, 1\), x /= 255\); attacks take the gradient .* begin forward "
                                          r"with x = x\.clone\(\)$"):
        probe_model(NormalizesInPlace(op), x, 3, "model")


def test_a_forward_that_copies_its_input_first_passes_and_leaves_the_input_alone() -> None:
    x = torch.rand(2, 1, 2, 2)
    kept = x.clone()
    probe_model(NormalizesInPlace("clone"), x, 3, "model")
    assert torch.equal(x, kept)


class LeavesTorch(nn.Module):
    """A defense that preprocesses in NumPy: ``x.numpy()`` raises when ``x`` requires a gradient; with ``detach``
    first it runs, and the graph is cut (the ``zero-gradients`` flag's business, not a refusal)."""

    def __init__(self, detach: bool) -> None:
        super().__init__()
        self.detach, self.fc = detach, nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        pixels = (x.detach() if self.detach else x).numpy()
        return self.fc(torch.from_numpy(pixels.round()).flatten(1))


def test_a_forward_that_fails_only_with_gradients_is_refused_before_any_probe() -> None:
    # Before: the check passed; the gradient probe then stopped the run with a raw RuntimeError traceback.
    with pytest.raises(ConfigError, match=r"^model: runs without gradients but not when its input requires one "
                                          r"\(RuntimeError: Can't call numpy\(\) on Tensor that requires grad.*\); "
                                          r"attacks differentiate the input, so detach where forward leaves torch"):
        probe_model(LeavesTorch(detach=False), torch.rand(2, 1, 2, 2), 3, "model")
    model = LeavesTorch(detach=True)
    probe_model(model, torch.rand(2, 1, 2, 2), 3, "model")
    assert model.training and all(p.grad is None for p in model.parameters())  # as it was: train mode, no grads


class OutOfMemory(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")


def test_out_of_memory_on_the_first_forward_is_the_runs_error_not_the_wrong_data() -> None:
    # Before: "cannot run on the data inputs [N, 1, 2, 2]: OutOfMemoryError: ...; evaluate it on the data it was
    # built for" -- advice about the data for a batch that did not fit; now the run's out-of-memory line says what
    # to lower (tests/test_cli_out_of_memory.py).
    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate 9.00 GiB"):
        probe_model(OutOfMemory(), torch.rand(2, 1, 2, 2), 3, "model")
