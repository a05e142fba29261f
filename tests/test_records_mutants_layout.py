"""The channels-last layout check of an evaluation (:mod:`kwta_robust.runtime`, the probe in
:mod:`kwta_robust.evaluate`): the README's "checks on 32 clean inputs that the predictions are the same" -- a model
whose predictions move in channels-last only on a later input must be kept as given."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.runtime import MAX_THREADS, channels_last_convolutions, check_threads, evaluation_layout
from test_runtime import Net


class LateRowsMoveInChannelsLast(Net):
    """In channels-last, the prediction of every input from the 32nd of a batch on moves to another class (a layout
    bug that only a probe on 32 inputs sees; one or 31 inputs do not)."""

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        if self.conv.weight.is_contiguous(memory_format=torch.channels_last) and len(x) > 31:
            shift = torch.zeros_like(out)
            shift[31:, :] = 100.0 * torch.nn.functional.one_hot((out[31:].argmax(1) + 1) % 3, 3)
            out = out + shift
        return out


def test_the_layout_is_checked_on_32_inputs(caplog) -> None:
    torch.manual_seed(0)
    model = LateRowsMoveInChannelsLast(2).eval()
    x = torch.rand(40, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # NCHW: every sample right
    data = TensorData(x, y, "toy", 3, torch.arange(40))
    cfg = EvalConfig.from_dict({"dataset": "toy", "n_examples": 40, "batch_size": 40,
                                "threats": [{"norm": "linf", "epsilons": [0.01]}],
                                "attacks": [{"attack": "fgsm"}], "diagnostics": {"enabled": False}})
    with caplog.at_level(logging.INFO, logger="kwta_robust.runtime"):
        record = evaluate(model, data, cfg, resume=False, progress=False)
    assert record.provenance["layout"] == "as given"
    assert record.clean.correct == 40 and record.clean_flags == [1] * 40  # what NCHW gives: the layout changed nothing
    assert [(r.levelno, "logits changed beyond float rounding" in r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, True)]
    assert model.conv.weight.is_contiguous()


def test_the_thread_limit_itself_is_accepted() -> None:
    """At most MAX_THREADS (1024): 1024 is accepted, 1025 is the one-line error."""
    assert check_threads(1024) == 1024 == MAX_THREADS
    with pytest.raises(ConfigError, match=r"^--threads: 1025 is more threads than any CPU has cores \(at most 1024\)"):
        check_threads(1025)


class OwnConv(nn.Conv2d):
    """A subclass of Conv2d (it might view its weight): left as it is."""


def test_only_plain_conv2d_weights_not_yet_channels_last_are_converted() -> None:
    model = Net(2)
    model.conv2 = OwnConv(2, 2, 3)
    ready = nn.Conv2d(3, 2, 3)
    ready.weight.data = ready.weight.data.to(memory_format=torch.channels_last)  # converted already
    model.ready = ready
    before = {name: (p.data_ptr(), p.stride()) for name, p in model.named_parameters()}
    with channels_last_convolutions([model]) as converted:
        assert converted == 1  # model.conv only
        assert model.conv.weight.stride() == (18, 1, 6, 2)  # NHWC strides of a [4, 2, 3, 3] weight
        assert (model.conv2.weight.data_ptr(), model.conv2.weight.stride()) == before["conv2.weight"]
        assert (model.ready.weight.data_ptr(), model.ready.weight.stride()) == before["ready.weight"]
        assert before["ready.weight"][1] == (27, 1, 9, 3)
    assert {name: (p.data_ptr(), p.stride()) for name, p in model.named_parameters()} == before
    only_ready = nn.Sequential(ready).eval()
    x = torch.rand(2, 3, 5, 5)
    with evaluation_layout([only_ready], "auto", torch.device("cpu"), lambda: [only_ready(x)]) as layout:
        assert layout == "as given"  # nothing to convert


class MovesInChannelsLast(Net):
    """Fixed logits plus ``shift`` when its convolution weight is channels-last."""

    def __init__(self, logits: list[float], shift: list[float]) -> None:
        super().__init__(2)
        self.logits, self.shift = torch.tensor(logits), torch.tensor(shift)

    def forward(self, x: Tensor) -> Tensor:
        moved = self.conv.weight.is_contiguous(memory_format=torch.channels_last)
        return super().forward(x) * 0 + self.logits + (self.shift if moved else 0)


def test_a_logit_moved_beyond_1e_4_or_a_flipped_near_tie_keeps_the_model_as_given(caplog) -> None:
    """Float rounding is ``allclose`` at rtol = atol = 1e-4: a logit moved by 1e-3 is a change; so is a prediction
    that flips between two logits 1e-6 apart though every logit moved by only 2e-6."""
    x = torch.rand(4, 2, 8, 8)
    cases = [([0.0, 2.0, -1.0], [0.0, 1e-3, 0.0]), ([0.0, 1e-6, -1.0], [0.0, -2e-6, 0.0]),
             ([0.0, 2.0, -1.0], [0.0, 1e-5, 0.0])]  # the last: float rounding, converted
    found = []
    for logits, shift in cases:
        model = MovesInChannelsLast(logits, shift).eval()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kwta_robust.runtime"):
            with evaluation_layout([model], "auto", torch.device("cpu"), lambda: [model(x)]) as layout:
                found.append(layout)
        assert len(caplog.records) == (layout == "as given")
    assert found == ["as given", "as given", "channels_last"]


def test_auto_converts_on_the_cpu_only() -> None:
    """``auto``: channels-last on the CPU, the model as given on any other device (not only CUDA), unprobed."""
    model = Net(2).eval()
    calls: list[str] = []
    for device in ("mps", "xpu", "cuda"):
        with evaluation_layout([model], "auto", torch.device(device), lambda: calls.append("probe") or []) as layout:
            assert layout == "as given" and model.conv.weight.is_contiguous()
    assert calls == []
