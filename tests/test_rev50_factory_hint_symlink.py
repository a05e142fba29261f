"""The ``--model-factory`` hint for a module file inside a package (session 49: ``mylab/models.py`` is
``mylab.models`` from the folder above) names the package as the path writes it. It took the folder's name after
resolving symlinks, so a package reached through a link (``mylab -> /data/lab_v2``) was named by its target
(``lab_v2.models``), which Python cannot import from the folder the hint puts on ``PYTHONPATH``."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.errors import CheckpointError


def test_a_package_reached_through_a_symlink_is_named_as_written(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "elsewhere" / "lab_v2"
    target.mkdir(parents=True)
    (target / "__init__.py").write_text("")
    (target / "models.py").write_text("def make():\n    return None\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "rev50_lab").symlink_to(target, target_is_directory=True)
    monkeypatch.chdir(work)
    with pytest.raises(CheckpointError) as info:
        load_byo_model("rev50_lab/models.py:make")
    message = str(info.value)
    assert "\n" not in message
    # was lab_v2.models:make, the link's target
    assert message.endswith("PYTHONPATH=.:$PYTHONPATH kwta-robust ... --model-factory rev50_lab.models:make")
