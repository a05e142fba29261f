"""The command line's terminal policy (:mod:`kwta_robust.commands.console`): Python warnings become log lines."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from attacks.base import NonLogitOutputWarning, check_logits
from kwta_robust.commands.console import configure_logging


def an_attack(logits: torch.Tensor) -> None:
    check_logits(logits)  # as an attack checks the model's outputs


def test_the_command_line_logs_each_python_warning_once(caplog: pytest.LogCaptureFixture) -> None:
    probabilities = torch.full((4, 10), 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # every call warns: the logger keeps one line per message
        configure_logging(0, False)
        with caplog.at_level(logging.WARNING):
            an_attack(probabilities)  # two attacks checking the same model: two call sites, one message
            an_attack(probabilities)
    assert [r.getMessage() for r in caplog.records] == [
        "model output: rows lie in [0, 1] and sum to 1, so the model returns probabilities; attacks need logits "
        f"(remove the final softmax), otherwise robust accuracy is over-estimated ({NonLogitOutputWarning.__name__})"]
    assert caplog.records[0].name == __name__  # the module it is attributed to: check_logits' caller's caller
