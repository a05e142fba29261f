"""``--factory-kwargs`` against a factory whose required argument is positional-only (``def build(n, /)``, as some
C-implemented or wrapped callables are): before, the message said "give it in --factory-kwargs", which then failed
as "unknown argument 'n' (it takes it only by position)"; now it names the way out (a wrapper taking it by name)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.errors import CheckpointError
from test_cli_eval import run_error, write_config

FACTORY = '''
from torch import nn


def build(n, /, hidden=4):
    return nn.Sequential(nn.Flatten(), nn.Linear(4, n))
'''


@pytest.fixture
def factory_module(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "posonly_factory_today.py").write_text(FACTORY)
    sys.path.insert(0, str(tmp_path))
    try:
        yield "posonly_factory_today:build"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("posonly_factory_today", None)


def test_a_required_positional_only_argument_names_the_way_out(factory_module: str) -> None:
    with pytest.raises(CheckpointError) as refused:
        load_byo_model(factory_module, factory_kwargs={"hidden": 8})
    assert str(refused.value) == (
        f"model factory '{factory_module}': required argument 'n' is positional-only, and --factory-kwargs passes "
        "arguments by name; wrap the factory in a function that takes 'n' by name (or gives it a default); "
        "accepted: hidden")


def test_giving_it_by_name_is_still_refused_in_one_line(factory_module: str) -> None:
    with pytest.raises(CheckpointError) as refused:
        load_byo_model(factory_module, factory_kwargs={"n": 2})
    assert str(refused.value) == (f"model factory '{factory_module}': unknown argument 'n' (it takes it only by "
                                  "position); accepted: hidden (--factory-kwargs)")


def test_evaluate_exits_2_with_the_line(factory_module: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml", n_examples=4, attacks=["fgsm"], noise=[])
    line = run_error(capsys, ["evaluate", "--config", str(cfg), "--model-factory", factory_module,
                              "--factory-kwargs", '{"hidden": 8}', "--no-progress", "--out", str(tmp_path / "r.json")])
    assert line.startswith(f"error: model factory '{factory_module}': required argument 'n' is positional-only"), line
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("kwargs", ['{"hidden": ' + "1" * 5000 + "}", "1" * 4301])
def test_an_integer_python_cannot_read_is_one_line(factory_module: str, kwargs: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """Before: Python's ValueError ("Exceeds the limit (4300 digits) for integer string conversion") and a
    traceback, as json.loads raised neither JSONDecodeError nor RecursionError."""
    cfg = write_config(tmp_path / "c.yaml", n_examples=4, attacks=["fgsm"], noise=[])
    line = run_error(capsys, ["evaluate", "--config", str(cfg), "--model-factory", factory_module,
                              "--factory-kwargs", kwargs, "--no-progress", "--out", str(tmp_path / "r.json")])
    assert line == (f"error: --factory-kwargs: {kwargs[:57] + '...'!r} holds an integer of more than 4,300 digits; "
                    "write a number of at most 4,300 digits")
