"""README (the three jobs): ``-v`` adds the debug lines of kwta-robust's own modules, "the traceback of a model that
raised" among them, while ``-vv`` adds every library's, which bury those. The one-line errors of a model or an attack
that raised still said ``-vv logs the traceback`` (as did the README's plug-in section): ``-v`` is the level that
shows it without torch's and matplotlib's lines."""

from __future__ import annotations

import logging

import pytest

from kwta_robust.api import evaluate_model
from kwta_robust.commands.console import configure_logging
from kwta_robust.errors import ConfigError, KwtaRobustError
from test_cli_mutants import bare_root
from test_model_failures import CONFIG, SmallBatchesOnly, data8
from test_readme_arch import _config, _data, _net, hostile, modes  # noqa: F401  (fixtures)


def logging_as_the_cli(monkeypatch: pytest.MonkeyPatch, verbose: int) -> None:
    """The CLI's logging on a bare root (called in the test body, after pytest added its handlers), the own loggers'
    levels restored after the test (configure_logging sets them)."""
    bare_root(monkeypatch)
    for name in ("kwta_robust", "attacks"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    configure_logging(verbose, False)


def test_one_v_logs_the_traceback_of_a_model_that_raised(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    logging_as_the_cli(monkeypatch, 1)
    x, y = data8()
    with pytest.raises(ConfigError) as caught:
        evaluate_model(SmallBatchesOnly().eval(), CONFIG, x, y, threads=1, progress=False)
    assert str(caught.value).endswith("fix the model's code there (-v logs the traceback)")
    err = capsys.readouterr().err
    assert "DEBUG kwta_robust.model_failures: model " in err and "Traceback (most recent call last)" in err
    assert "ValueError: batch too large for this model" in err


def test_without_v_no_traceback_is_logged(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    logging_as_the_cli(monkeypatch, 0)
    x, y = data8()
    with pytest.raises(ConfigError):
        evaluate_model(SmallBatchesOnly().eval(), CONFIG, x, y, threads=1, progress=False)
    assert "Traceback" not in capsys.readouterr().err


def test_one_v_logs_the_traceback_of_an_attack_that_raised(hostile: None, modes: None,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    logging_as_the_cli(monkeypatch, 1)
    net = _net()
    x, y = _data(net)
    with pytest.raises(KwtaRobustError) as caught:
        evaluate_model(net, _config("boom"), x, y, threads=1)
    assert "attack 'hostile' at Linf 0.1 raised _Boom: inside the plug-in" in str(caught.value)
    assert str(caught.value).endswith("(-v logs the traceback)")
    err = capsys.readouterr().err
    assert "DEBUG attacks.cascade: attack 'hostile' at Linf 0.1 raised" in err
    assert "Traceback (most recent call last)" in err


def test_one_v_logs_the_data_set_loaded(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from kwta_robust.data import load_dataset

    logging_as_the_cli(monkeypatch, 1)
    load_dataset("mnist5k", "test")
    assert "DEBUG kwta_robust.data: loaded mnist5k/test: 1000 samples of shape (1, 28, 28)" in capsys.readouterr().err
    logging_as_the_cli(monkeypatch, 0)
    load_dataset("mnist5k", "test")
    assert "DEBUG" not in capsys.readouterr().err
