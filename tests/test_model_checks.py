"""Model checks before any work: sizes counted without memory, probes that leave the model (and the RNG) as they
were, non-finite weights named, and checkpoint messages that suggest --allow-pickle only for real pickle files."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.errors import CheckpointError, ConfigError
from kwta_robust.evaluate import ModelSnapshot
from kwta_robust.model_checks import build_model, check_buildable, check_finite, meta_model, probe_model
from kwta_robust.models import ModelSpec

torch.set_num_threads(1)


def spec_of(arch: str = "mlp", **kw) -> ModelSpec:
    args = {"activation": {"name": "kwta", "ratio": 0.25, "boost_strength": 1.0}, "num_classes": 10,
            "in_channels": 1, "input_size": 28, **kw}
    return ModelSpec.from_args(arch, **args)


def test_sizes_are_counted_on_meta_without_memory() -> None:
    absurd = spec_of(hidden=[10**7, 10**7])
    skeleton = meta_model(absurd)
    assert skeleton is not None and all(p.is_meta for p in skeleton.parameters())
    count = sum(p.numel() for p in skeleton.parameters())
    assert count > 10**14
    for check in (lambda: build_model(absurd, "model"), lambda: check_buildable(absurd, "train.arch_kwargs")):
        with pytest.raises(ConfigError, match=re.escape(f"would have {count:,} parameters ({4 * count / 2**30:.3g} GiB "
                                                        "as float32), more than the 2,000,000,000 allowed")):
            check()
    real = spec_of("cnn", channels=[4, 8], hidden=16)
    assert sum(p.numel() for p in meta_model(real).parameters()) == sum(p.numel() for p in real.build().parameters())
    bad = ModelSpec("cnn", {**real.kwargs, "hidden": "x"})  # from_args refuses it: a spec read from a checkpoint
    with pytest.raises(ConfigError, match=r"model: cannot build cnn\(channels=\[4, 8\], hidden='x'\)"):
        build_model(bad, "model")


def test_probe_leaves_model_and_rng_exactly_as_they_were() -> None:
    spec = spec_of("cnn", channels=[4, 8], hidden=16, batch_norm=True)
    model = spec.build().train()  # train mode: boosting duty cycles and BatchNorm statistics would move
    before = ModelSnapshot.capture(model)
    x = torch.rand(2, 1, 28, 28)
    rng = torch.random.get_rng_state()
    meta_model(spec)
    probe_model(model, x, 10, "model", data_name="mnist5k")
    before.verify(model, "the probe")
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert model.training


def test_probe_messages() -> None:
    model = spec_of(hidden=[16]).build()
    with pytest.raises(ConfigError, match=r"cannot run on cifar10 inputs \[N, 3, 32, 32\] \(it expects inputs "
                                          r"\[N, 1, 28, 28\], was trained on mnist5k\): RuntimeError"):
        probe_model(model, torch.rand(2, 3, 32, 32), 10, "model", data_name="cifar10",
                    expected_input="[N, 1, 28, 28]", trained_on="mnist5k")
    with pytest.raises(ConfigError, match="has 10 outputs but toy has 4 classes"):
        probe_model(model, torch.rand(2, 1, 28, 28), 4, "model", data_name="toy")
    big_k = ModelSpec.from_args("mlp", activation={"name": "kwta", "k": 17}, hidden=[16]).build()
    with pytest.raises(ConfigError, match=r"k=17 exceeds the 16 units of kWTA layer 'net.2' \(dense mode\)"):
        probe_model(big_k, torch.rand(2, 1, 28, 28), 10, "model")
    exact_k = ModelSpec.from_args("mlp", activation={"name": "kwta", "k": 16}, hidden=[16]).build()
    probe_model(exact_k, torch.rand(2, 1, 28, 28), 10, "model")  # k = layer size is allowed (keeps every unit)
    for flavour in ("nan", "inf"):
        broken = spec_of("cnn", channels=[2], hidden=4, batch_norm=True).build()
        broken.features[2].running_var.fill_(float(flavour))
        with pytest.raises(ConfigError, match=r"'features.2.running_var' holds 2 NaN or infinite value\(s\) of 2"):
            check_finite(broken, "model")


def test_random_bytes_are_corrupt_and_only_pickle_files_suggest_allow_pickle(tmp_path: Path) -> None:
    for seed in range(25):
        path = tmp_path / f"r{seed}.pt"
        path.write_bytes(random.Random(seed).randbytes(64 + 97 * seed))
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert "corrupt or not a checkpoint" in str(info.value) and "pickle" not in str(info.value)
    pickled = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), pickled)
    with pytest.raises(CheckpointError, match=r"need pickle to load \(it names torch.nn.modules.linear.Linear; "
                       r"pickle can run code\); pass .*\(--allow-pickle\)"):
        load_checkpoint(pickled)
    assert isinstance(load_checkpoint(pickled, allow_pickle=True).model, nn.Linear)


class ColourNet(nn.Module):
    """A CIFAR-style model normalizing inside forward, ``(x - mean[1, 3, 1, 1]) / std``, then a 3-channel convolution:
    on grey ``[N, 1, H, W]`` images the normalization broadcasts them to three channels and nothing fails."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("mean", torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv((x - self.mean) / 0.25).mean(dim=(2, 3)))


def test_a_colour_model_on_grey_images_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    grey, colour = torch.rand(4, 1, 8, 8), torch.rand(4, 3, 8, 8)
    with caplog.at_level("WARNING", logger="kwta_robust.model_checks"):
        probe_model(ColourNet(), grey, 10, "model colour", data_name="mnist5k")
    assert ("model colour: its first convolution (conv) takes 3 channels but mnist5k images have 1: the model "
            "broadcast or repeated their channels") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="kwta_robust.model_checks"):
        probe_model(ColourNet(), colour, 10, "model colour", data_name="cifar10")
        probe_model(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 10)),
                    grey, 10, "model grey", data_name="mnist5k")
    assert caplog.text == ""


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_in_another_precision_is_told_to_cast_its_input(dtype: torch.dtype) -> None:
    """The data are float32 images: a model built in float64 or bfloat16 fails on them, and the message says so
    (before: 'evaluate it on the data it was built for', which no data set fixes); a model casting its own input
    runs."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).to(dtype)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(ConfigError, match=rf"model: its parameters are {name} but the mnist5k inputs are float32 "
                                          rf"\(RuntimeError: .*\); cast the input first in forward \(x = "
                                          rf"x.to\(torch.{name}\)\) or build the model in float32"):
        probe_model(model, torch.rand(2, 1, 4, 4), 10, "model", data_name="mnist5k")

    class Cast(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.to(dtype)

    probe_model(nn.Sequential(Cast(), model), torch.rand(2, 1, 4, 4), 10, "model", data_name="mnist5k")


def test_a_model_in_another_precision_that_fails_on_the_shape_is_told_the_shape() -> None:
    """A float64 model that casts its input itself but was built for 3x32x32 images: the error is the shape, and the
    message says so (before: 'its parameters are float64 ... cast the input first in forward')."""

    class Cast(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.to(torch.float64)

    model = nn.Sequential(Cast(), nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).to(torch.float64)
    with pytest.raises(ConfigError, match=r"cannot run on mnist5k inputs \[N, 1, 28, 28\] \(it expects inputs "
                                          r"\[N, 3, 32, 32\]\): RuntimeError: mat1 and mat2 shapes") as caught:
        probe_model(model, torch.rand(2, 1, 28, 28), 10, "model", data_name="mnist5k", expected_input="[N, 3, 32, 32]")
    assert "cast the input" not in str(caught.value)


def test_a_model_that_runs_on_a_batch_but_not_on_one_sample_is_refused_before_any_work() -> None:
    """Attacks go on with the samples a batch has left, down to one: batch norm with batch statistics in eval mode
    on a flat feature vector fails there (one value per channel). Batch norm over a feature map runs on one sample
    and is left to the batch-dependent flag."""
    flat = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 10))
    with pytest.raises(ConfigError, match=r"^model: runs on 3 inputs but not on one alone \(ValueError: .*\): batch "
                                          r"norm '2' normalizes with batch statistics in eval mode"):
        probe_model(flat, torch.rand(3, 1, 4, 4), 10, "model")
    with pytest.raises(ConfigError, match="cannot run on the data inputs"):  # not even a batch: the usual message
        probe_model(flat, torch.rand(1, 1, 4, 4), 10, "model")
    mixing = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten(),
                           nn.Linear(8, 10))
    probe_model(mixing, torch.rand(3, 1, 4, 4), 10, "model")  # 2x2 values per channel: it runs on one sample


def test_a_forward_that_fails_names_the_module_that_raised() -> None:
    """A Numenta-style gate whose inference k exceeds its units (percent_on 0.8 x k_inference_factor 1.5) fails in
    its own topk: the message said only 'evaluate it on the data it was built for', which no data set fixes."""

    class Winners(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * (x >= x.topk(24, dim=1).values[:, -1:]).to(x.dtype)  # 24 winners of 16 units

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), Winners(), nn.Linear(16, 10))
    with pytest.raises(ConfigError) as caught:
        probe_model(model, torch.rand(2, 1, 4, 4), 10, "model gsc", data_name="mnist5k")
    assert str(caught.value) == ("model gsc: cannot run on mnist5k inputs [N, 1, 4, 4]: RuntimeError: selected index k "
                                 "out of range (raised in module 2 (Winners)); evaluate it on the data it was built "
                                 "for (dataset: in the evaluation config, or --data FILE in evaluate and compare), or "
                                 "fix module 2 if these are its inputs")
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())  # no hook left behind
    inside = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    inside.forward = lambda x: torch.cat([x, x], dim=5)  # raised between modules: no module named
    with pytest.raises(ConfigError, match=r"IndexError: .*; evaluate it on the data it was built for \(dataset: .*\)$"):
        probe_model(inside, torch.rand(2, 1, 4, 4), 10, "model", data_name="mnist5k")


class _Calls:
    """Unpickled, it calls ``os.getcwd`` (a harmless stand-in for ``os.system``): a module torch's weights-only
    loader blocks outright, worded "unsupported GLOBAL posix.getcwd whose module posix is blocked"."""

    def __reduce__(self) -> tuple:
        return os.getcwd, ()


def test_a_file_calling_a_blocked_module_says_pickle_and_names_the_call_not_corrupt(tmp_path: Path) -> None:
    """torch words a blocked module's global otherwise than a class ("unsupported GLOBAL posix.getcwd"): the file
    read as "corrupt or not a checkpoint; re-create or re-download it", hiding that it runs code when unpickled."""
    pickled = tmp_path / "calls.pt"
    torch.save({"model": _Calls()}, pickled)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(pickled)
    assert f"it names {os.getcwd.__module__}.getcwd; pickle can run code" in str(info.value)
    assert "corrupt" not in str(info.value) and "--allow-pickle" in str(info.value)
