"""Model-factory fuzzing (``--model-factory`` / kwta_robust.checkpoint.load_byo_model): names, modules and
arguments that stopped with a raw traceback now stop with one line naming the factory and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.errors import CheckpointError
from kwta_robust.loading import load_model
from test_checkpoint import _one_line, byo_module  # noqa: F401 - fixture
from test_dry_run import run, write_config


def _message(factory: str, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_byo_model(factory, **kwargs)
    return _one_line(info)


@pytest.mark.parametrize(("factory", "fix"), [
    ("../my_byo_models:small_net", "write the module's import name, not a file: PYTHONPATH=..:$PYTHONPATH "
                                   "kwta-robust ... --model-factory my_byo_models:small_net"),
    (".my_byo_models:small_net", "write the absolute module name, without the leading '.' (e.g. "
                                 "mypkg.models:make_net)"),
    ("..:small_net", "write the absolute module name, without the leading '.' (e.g. mypkg.models:make_net)"),
])
def test_a_relative_module_name_is_one_line_with_the_fix(byo_module: str, factory: str,  # noqa: F811
                                                         fix: str) -> None:
    """importlib raised TypeError ("the 'package' argument is required to perform a relative import")."""
    module = factory.partition(":")[0]
    assert _message(factory) == f"model factory {factory!r}: {module!r} is a relative module name; {fix}"


@pytest.mark.parametrize(("source", "raised"), [
    ("raise RuntimeError('no GPU here')\n", "RuntimeError: no GPU here"),
    ("def make(:\n    pass\n", "SyntaxError: invalid syntax (broken_factory.py, line 1)"),
    ("import sys\nsys.exit(4)\n", "SystemExit: 4"),
])
def test_a_module_whose_import_fails_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str,
                                                 raised: str) -> None:
    (tmp_path / "broken_factory.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _message("broken_factory:make") == (
        f"model factory 'broken_factory:make': importing 'broken_factory' raised {raised}; fix the module "
        "(python -c 'import broken_factory' shows the traceback)")


def test_a_factory_building_on_the_meta_device_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights loaded into meta parameters are dropped (a warning only), then describing it raised a RuntimeError."""
    (tmp_path / "meta_nets.py").write_text("import torch\n\ndef make():\n    with torch.device('meta'):\n"
                                           "        return torch.nn.Sequential(torch.nn.Flatten(), "
                                           "torch.nn.Linear(64, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _message("meta_nets:make") == (
        "model factory 'meta_nets:make': '1.weight' is on the meta device (it holds no values); build the model on "
        "the CPU (outside torch.device('meta')), or call model.to_empty(device='cpu') in the factory and load its "
        "weights (--weights)")


@pytest.mark.parametrize("kwargs", [[1, 2], "abc", 5])
def test_factory_kwargs_that_are_not_a_mapping_are_one_line(byo_module: str, kwargs) -> None:  # noqa: F811
    """dict(...) of them raised TypeError / ValueError from the Python API."""
    expected = (f"model factory '{byo_module}:small_net': factory_kwargs is {type(kwargs).__name__}, not a mapping "
                "of argument names to values; pass e.g. {'num_classes': 10} (--factory-kwargs '{\"num_classes\": 10}')")
    assert _message(f"{byo_module}:small_net", factory_kwargs=kwargs) == expected
    with pytest.raises(CheckpointError) as info:
        load_model(None, "cpu", model_factory=f"{byo_module}:small_net", factory_kwargs=kwargs)
    assert _one_line(info) == expected


def test_the_cli_refuses_a_relative_factory_in_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path / "c.yaml", dataset="digits")
    rc, _, errors = run(["evaluate", "--model-factory", "../nets:make", "--config", str(cfg), "--dry-run"], capsys)
    assert rc == 2 and errors == ["error: model factory '../nets:make': '../nets' is a relative module name; write "
                                  "the module's import name, not a file: PYTHONPATH=..:$PYTHONPATH kwta-robust ... "
                                  "--model-factory nets:make"]
