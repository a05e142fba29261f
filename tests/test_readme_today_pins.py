"""README sentences added today that no test held: a noise probe or a diagnostics check that prints while it runs
has its lines logged at INFO naming it, never on stdout, and the warnings filters it changed put back with a warning
(README, Plug-ins; only attacks and imports were tested); the dry run raises the flags of its gradient probes, and
the ``zero-gradients`` check there also gives ``nan-gradients`` (README, ``--dry-run``)."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import Tensor, nn

from attacks.noise import run_noise_probe
from eval_helpers import make_record
from kwta_robust.config import EvalConfig
from kwta_robust.diagnostics_base import Thresholds, checked_flags
from kwta_robust.dry_run import probe_flags
from kwta_robust.results import Flag

FILTERS_PUT_BACK = "changed the warnings filters (warnings.simplefilter, filterwarnings or showwarning)"


class ChattyNoise:
    """A noise probe plug-in that prints and silences every warning: the identity on its inputs."""

    name, level_name, max_level = "chatty", "std", None

    def apply(self, x: Tensor, level: float, generator: torch.Generator, bounds: tuple[float, float]) -> Tensor:
        print(f"noisy at {level}")
        warnings.simplefilter("ignore")
        return x.clone()

    def default_levels(self) -> tuple[float, ...]:
        return (0.0,)


def test_a_noise_probe_that_prints_is_logged_and_its_filters_put_back(capsys: pytest.CaptureFixture,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(5, 1, 2, 2)
    y = model(x).argmax(1)  # every input classified as labelled: the identity noise keeps them all
    before = list(warnings.filters)
    with caplog.at_level(logging.INFO, logger="attacks.plugin_isolation"):
        result = run_noise_probe(model, x, y, ChattyNoise(), levels=[0.0, 0.5], draws=1)
    assert capsys.readouterr().out == ""
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["noise probe 'chatty' printed: noisy at 0.5"]  # level 0 is the clean input: not called
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith(f"noise probe 'chatty' {FILTERS_PUT_BACK}")
    assert warnings.filters == before and result.accuracy == (1.0, 1.0)


def test_a_diagnostics_check_that_prints_is_logged_and_its_filters_put_back(capsys: pytest.CaptureFixture,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    def chatty(record: object, thresholds: Thresholds) -> list[Flag]:
        print("checking\nstill checking")
        warnings.simplefilter("error")
        return []

    before = list(warnings.filters)
    with caplog.at_level(logging.INFO, logger="attacks.plugin_isolation"):
        assert checked_flags("chatty", chatty, make_record(n=4), Thresholds()) == []
    assert capsys.readouterr().out == ""
    assert [(r.levelno, r.getMessage().split(" (")[0]) for r in caplog.records] == [
        (logging.INFO, "diagnostic check 'chatty' printed: checking"),
        (logging.INFO, "diagnostic check 'chatty' printed: still checking"),
        (logging.WARNING, f"diagnostic check 'chatty' {FILTERS_PUT_BACK.split(' (')[0]}")]
    assert warnings.filters == before


def test_the_dry_runs_probe_flags_include_nan_gradients() -> None:
    cfg = EvalConfig.from_dict({"dataset": "mnist5k", "threats": [{"norm": "linf", "epsilons": [0.1]}],
                                "attacks": ["fgsm"]})
    probes = {"n": 4, "grad_zero_fraction": 0.0, "grad_nonfinite_fraction": 0.25}
    flags = probe_flags(make_record(n=4, probes=probes), cfg)  # nan-gradients: the zero-gradients check's
    assert [(f.code, f.message) for f in flags] == [
        ("nan-gradients", "25.0% of 4 probed samples have NaN/inf input gradients: gradient attacks are unreliable")]
    assert probe_flags(make_record(n=4), cfg) == []  # no probes (diagnostics off): no flags
