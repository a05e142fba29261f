"""A model factory's ``ValueError`` that names none of the ``--factory-kwargs`` given (a value refused under another
name) was a bare ``CheckpointError``: ``compare`` of two factories told it without the ``MODEL n (label)`` it puts
before the factories' other refusals, so the user did not learn which model's factory it was, nor that every factory
gets the same arguments. It is a ``FactoryArgumentError`` now (a ``CheckpointError`` still), prefixed as the others.

The two factories are this module's functions (``tests`` is on the import path of the test run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from kwta_robust.errors import CheckpointError, FactoryArgumentError
from kwta_robust.factory_args import call_factory
from test_cli_eval import run_error, write_config

ACCEPTS, REFUSES = f"{__name__}:accepting", f"{__name__}:refusing"


def accepting(width: int) -> nn.Module:
    """A factory that builds a small MNIST classifier of hidden ``width``."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))


def refusing(width: int) -> nn.Module:
    """A factory whose check of the (given) width fails naming another value."""
    raise ValueError(f"the layers' sizes disagree: {width + 1} != 7")


def test_call_factory_raises_a_factory_argument_error_for_an_unnamed_value_error() -> None:
    with pytest.raises(FactoryArgumentError) as caught:
        call_factory(REFUSES, refusing, {"width": 3})
    assert isinstance(caught.value, CheckpointError)  # what evaluate and load_model callers catch
    assert str(caught.value) == (f"model factory {REFUSES!r} raised ValueError: the layers' sizes disagree: 4 != 7; "
                                 "check the arguments (--factory-kwargs gave: width) or fix the factory")


def test_compare_names_the_model_whose_factory_raised_a_value_error(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    line = run_error(capsys, ["compare", ACCEPTS, REFUSES, "--factory-kwargs", '{"width": 3}', "--config", str(cfg),
                              "--out-dir", str(tmp_path / "cmp"), "--dry-run"])
    assert line.startswith(f"error: MODEL 2 (refusing): model factory {REFUSES!r} raised ValueError: the layers' "
                           "sizes disagree: 4 != 7; check the arguments (--factory-kwargs gave: width) or fix the "
                           "factory; compare passes the same --factory-kwargs to all 2 package.module:function models")
