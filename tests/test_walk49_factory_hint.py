"""Persona walk 49: a factory given as the file of a module inside a package (``mylab/models.py:make_relu``) got the
hint ``PYTHONPATH=mylab:$PYTHONPATH ... --model-factory models:make_relu``, which imports the module outside its
package: its relative imports (``from .layers import ...``) fail, and ``models`` is a name other code takes too. The
hint now names the module by its package (``mylab.models``) from the folder above the package."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.errors import CheckpointError


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "walk49_lab"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "layers.py").write_text("from torch import nn\n\n\ndef head():\n    return nn.Linear(64, 10)\n")
    (root / "models.py").write_text("from torch import nn\n\nfrom .layers import head\n\n\n"
                                    "def make_relu():\n    return nn.Sequential(nn.Flatten(), head())\n")
    monkeypatch.chdir(tmp_path)
    return root


def _hint(factory: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_byo_model(factory)
    message = str(info.value)
    assert "\n" not in message
    return message.partition("write the module's import name, not a file: ")[2]


def test_the_hint_names_a_package_module_by_its_package(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fix = "kwta-robust ... --model-factory walk49_lab.models:make_relu"
    assert _hint("walk49_lab/models.py:make_relu") == f"PYTHONPATH=.:$PYTHONPATH {fix}"
    assert _hint(f"{package}/models:make_relu") == f"PYTHONPATH={package.parent}:$PYTHONPATH {fix}"
    monkeypatch.chdir(package)  # from inside the package: its parent goes on the path
    assert _hint("models.py:make_relu") == f"PYTHONPATH=..:$PYTHONPATH {fix}"
    monkeypatch.syspath_prepend(str(package.parent))  # the fix, followed: the module and its relative import load
    assert isinstance(load_byo_model("walk49_lab.models:make_relu").model, nn.Module)
