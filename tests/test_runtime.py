"""The thread policy of every command and the channels-last evaluation layout (:mod:`kwta_robust.runtime`)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor, nn

from kwta_robust import cli
from kwta_robust.errors import ConfigError
from kwta_robust.runtime import (
    DEFAULT_THREADS,
    THREADS_HELP,
    channels_last_convolutions,
    evaluation_layout,
    torch_threads,
)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_torch_threads_sets_and_restores(restore_threads) -> None:
    torch.set_num_threads(2)
    with torch_threads(None) as count:
        assert count == torch.get_num_threads() == DEFAULT_THREADS == 1
    assert torch.get_num_threads() == 2
    with torch_threads(0) as count:  # torch's own setting stays
        assert count == 2
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with pytest.raises(ConfigError, match="--threads"), torch_threads(-1):
        pass
    # a typo such as 100000 crashed the process (exit 139) while OpenMP / BLAS set up their pools
    with pytest.raises(ConfigError, match=r"--threads: 100000 is more threads than any CPU has cores \(at most 1024\)"):
        with torch_threads(100000):
            pass
    assert torch.get_num_threads() == 2


def test_a_training_config_with_too_many_threads_is_one_line() -> None:
    from kwta_robust.training.config import TrainConfig

    with pytest.raises(ConfigError, match="threads: 5000 is more threads than any CPU has cores"):
        TrainConfig.from_dict({"dataset": "digits", "threads": 5000})


@pytest.mark.parametrize("command", ["train", "evaluate", "compare", "sweep", "quickstart"])
def test_every_computing_command_has_the_thread_flag(command: str) -> None:
    parser, _ = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    action = sub._option_string_actions["--threads"]
    assert action.help.startswith(THREADS_HELP) and "default 1" in action.help and "0 = torch's default" in action.help
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert all("--threads" not in commands[name]._option_string_actions for name in ("table", "report"))


@pytest.mark.parametrize(("argv", "expected"), [([], 1), (["--threads", "2"], 2)])
def test_commands_run_under_the_thread_policy(monkeypatch, restore_threads, argv: list[str], expected: int) -> None:
    seen: list[int] = []
    parser, modules = cli.build_parser()
    monkeypatch.setattr(modules["evaluate"], "run", lambda args: seen.append(torch.get_num_threads()) or 0)
    torch.set_num_threads(2 if expected == 1 else 1)
    before = torch.get_num_threads()
    assert cli.main(["evaluate", "--config", "x.yaml", *argv]) == 0
    assert seen == [expected] and torch.get_num_threads() == before


def test_bad_thread_count_is_a_one_line_error(capsys) -> None:
    assert cli.main(["evaluate", "--config", "x.yaml", "--threads", "-2"]) == 2
    assert capsys.readouterr().err.startswith("error: --threads: must be an integer >= 1, or 0")


# --- channels-last layout -------------------------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


class ViewsItsWeight(Net):
    """A model that reads its convolution weight as a flat NCHW view (breaks in channels-last)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + self.conv.weight.view(-1)[:3]


class DependsOnLayout(Net):
    """A model whose logits read the memory layout of its convolution weight (they move in channels-last)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + float(self.conv.weight.is_contiguous(memory_format=torch.channels_last))


def test_channels_last_puts_the_very_same_tensors_back() -> None:
    model = Net()
    weight = model.conv.weight
    original, pointer, strides = weight.detach().clone(), weight.data_ptr(), weight.stride()
    with channels_last_convolutions([model, model]) as converted:  # a model listed twice is converted once
        assert converted == 1 and model.conv.weight is weight
        assert weight.stride() != strides and weight.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(weight, original) and weight.data_ptr() != pointer
    assert weight.data_ptr() == pointer and weight.stride() == strides and torch.equal(weight, original)


def test_layout_auto_converts_on_cpu_and_checks_the_logits() -> None:
    model = Net(2).eval()
    x = torch.rand(5, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with evaluation_layout([model], "auto", torch.device("cpu"), lambda: [model(x)]) as layout:
        assert layout == "channels_last"
        assert model.conv.weight.stride() == torch.empty_like(model.conv.weight,
                                                              memory_format=torch.channels_last).stride()
    assert model.conv.weight.is_contiguous()
    with evaluation_layout([model], "preserve", torch.device("cpu"), lambda: [model(x)]) as layout:
        assert layout == "as given" and model.conv.weight.is_contiguous()
    with evaluation_layout([model], "auto", torch.device("cuda"), lambda: [model(x)]) as layout:
        assert layout == "as given"  # auto converts on the CPU only (nothing runs here)
    with pytest.raises(ConfigError, match="layout"), evaluation_layout([model], "nhwc", torch.device("cpu"), list):
        pass


def test_a_model_that_fails_in_channels_last_keeps_its_layout(caplog) -> None:
    model = ViewsItsWeight(2).eval()
    x = torch.rand(5, 2, 8, 8)
    with caplog.at_level(logging.INFO, logger="kwta_robust.runtime"):
        with evaluation_layout([model], "auto", torch.device("cpu"), lambda: [model(x)]) as layout:
            assert layout == "as given" and model.conv.weight.is_contiguous()
            model(x)  # runs: the original layout is back
    # nothing is wrong with such a model (released kWTA code views NCHW tensors): an info line, not a warning
    assert [(r.levelno, "keeping the model's own layout" in r.getMessage()) for r in caplog.records] == [
        (logging.INFO, True)]
    caplog.clear()
    model = DependsOnLayout(2).eval()
    with caplog.at_level(logging.INFO, logger="kwta_robust.runtime"):
        with evaluation_layout([model], "auto", torch.device("cpu"), lambda: [model(x)]) as layout:
            assert layout == "as given" and model.conv.weight.is_contiguous()
    # a model whose numbers depend on the layout is worth a look: a warning
    assert [(r.levelno, "logits changed beyond float rounding" in r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, True)]


class OwnGeneratorNoise(Net):
    """Input noise from a generator of its own: two probes under one seed of the global RNG differ."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__(in_channels)
        self.gen = torch.Generator().manual_seed(3)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x + torch.randn(x.shape, generator=self.gen))


def test_a_model_with_its_own_generator_is_not_blamed_on_the_layout(caplog) -> None:
    """Before, its logits "changed beyond float rounding" in channels-last: a warning that blamed the layout for
    the model's own draws. Now the runner sees the change between two probes before converting: an info line."""
    model = OwnGeneratorNoise(2).eval()
    x = torch.rand(5, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO, logger="kwta_robust.runtime"):
        with evaluation_layout([model], "auto", torch.device("cpu"), lambda: [model(x)]) as layout:
            assert layout == "as given" and model.conv.weight.is_contiguous()
    assert [(r.levelno, "randomness the runner cannot seed" in r.getMessage()) for r in caplog.records] == [
        (logging.INFO, True)]


def test_evaluate_records_the_layout_and_threads_and_leaves_the_model(tmp_path) -> None:
    from kwta_robust.config import EvalConfig
    from kwta_robust.data import TensorData
    from kwta_robust.evaluate import evaluate

    model = Net().eval()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    data = TensorData(x, y, "toy", 3, torch.arange(12))
    cfg = EvalConfig.from_dict({"dataset": "toy", "n_examples": 12, "threats": [{"norm": "linf", "epsilons": [0.05]}],
                                "attacks": [{"attack": "pgd", "params": {"steps": 3}}],
                                "diagnostics": {"enabled": False}})
    pointer = model.conv.weight.data_ptr()
    auto = evaluate(model, data, cfg, resume=False, progress=False)
    kept = evaluate(model, data, cfg, resume=False, progress=False, layout="preserve")
    assert auto.provenance["layout"] == "channels_last" and kept.provenance["layout"] == "as given"
    assert auto.provenance["torch_threads"] == torch.get_num_threads()
    assert model.conv.weight.data_ptr() == pointer and model.conv.weight.is_contiguous()
    assert [r.robust.correct for r in auto.results] == [r.robust.correct for r in kept.results]
