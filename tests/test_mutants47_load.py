"""Mutation review (session 47) of loading models: each test kills a mutant of kwta_robust/checkpoint.py,
loading.py or factory_args.py that the tests before let survive."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.errors import CheckpointError, FactoryArgumentError
from kwta_robust.factory_args import call_factory
from kwta_robust.loading import ModelArgument, load_models
from test_cli_eval import write_checkpoint
from test_pickled_code_missing import saved_whole


def test_a_pickled_models_module_raising_a_long_import_error_is_told_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved_whole(tmp_path, monkeypatch, "persona_models_47")
    module = tmp_path / "code" / "persona_models_47.py"
    module.write_text('raise ImportError("the optional backend is missing\\ninstall it with pip")\n'
                      + module.read_text())
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, allow_pickle=True)
    message = str(info.value)
    assert "\n" not in message and "install it" not in message
    assert "the pickled model's code cannot be imported (the optional backend is missing)" in message


def test_compare_gives_the_shared_factory_kwargs_to_its_factories_and_not_to_a_checkpoint(tmp_path: Path) -> None:
    given = [ModelArgument(checkpoint=str(write_checkpoint(tmp_path / "relu.pt"))),
             ModelArgument(model_factory="kwta_robust.zoo:xiao_spcnn")]
    models = load_models(given, ["relu", "spcnn"], "cpu", factory_kwargs={"sp1": 0.1})
    assert [m.label for m in models] == ["relu", "spcnn"]


def _positive(size: int, *, depth: int = 1) -> nn.Module:
    if size <= 0:
        raise ValueError("size must be positive")
    return nn.Identity()


def _fussy(**kwargs: object) -> nn.Module:
    raise TypeError("got an unexpected keyword")


def _positional(size: int, /) -> nn.Module:
    return nn.Identity()


@pytest.mark.parametrize("build, kwargs, words", [
    (_positive, {"size": 0}, "argument 'size' = 0 refused (ValueError: size must be positive)"),
    (_fussy, {"a": 1}, "bad arguments (--factory-kwargs gave: a; got an unexpected keyword)"),
    (_positive, {"size": 1, "width": 2}, "unknown argument 'width'"),
    (_positional, {}, "required argument 'size' is positional-only"),
    (_positive, {"depth": 2}, "missing required argument 'size'"),
    (_positive, {"size": "big"}, "pass a value of that type in --factory-kwargs"),
])
def test_each_refusal_of_the_factory_kwargs_is_a_factory_argument_error(build, kwargs: dict, words: str) -> None:
    with pytest.raises(FactoryArgumentError) as info:  # what compare names as MODEL n (label) with its fix
        call_factory("mine:net", build, kwargs)
    assert words in str(info.value)
