"""A whole pickled model whose module is on the path but fails to import (an ``ImportError`` of its own: a name its
dependency does not define) is refused with the fix, as a module not on the path is, not called corrupt: the file
is fine, its code does not import (found by the session-46 mutation review: ``ModuleNotFoundError`` only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.errors import CheckpointError
from test_pickled_code_missing import saved_whole


def test_a_pickled_model_whose_module_fails_its_own_import_is_not_called_corrupt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved_whole(tmp_path, monkeypatch, "persona_models_d")
    module = tmp_path / "code" / "persona_models_d.py"
    module.write_text("from torch import no_such_name_46b\n" + module.read_text())
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, allow_pickle=True)
    message = str(info.value)
    assert "corrupt" not in message and "re-download" not in message and "\n" not in message
    assert "the pickled model's code cannot be imported (cannot import name 'no_such_name_46b' from 'torch'" in message
    assert "PYTHONPATH" in message and "state_dict" in message
