"""A whole pickled model (``torch.save(net)``, loaded with ``--allow-pickle``) whose classes' module is not
importable where kwta-robust runs is refused with the fix (put its folder on ``PYTHONPATH``), not called corrupt:
the file is fine, the code it needs is missing. A researcher who saved a model defined in their own ``models.py``
and ran ``kwta-robust evaluate net.pt --allow-pickle`` from another folder was told to re-download the file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from kwta_robust.checkpoint import load_byo_model, load_checkpoint
from kwta_robust.errors import CheckpointError

torch.set_num_threads(1)

GATE = """
import torch
from torch import nn


class {name}(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (h >= h.topk(2, dim=1).values[:, -1:])


def make_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 8), {name}(), nn.Linear(8, 10))
"""


def saved_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str) -> Path:
    """``torch.save`` of a model built from ``<tmp_path>/code/<module>.py``, then that module gone from the path."""
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{module}.py").write_text(GATE.format(name="Gate"))
    with monkeypatch.context() as patch:
        patch.syspath_prepend(str(code))
        torch.manual_seed(0)
        net = __import__(module).make_net()
        path = tmp_path / "whole.pt"
        torch.save(net, path)
        torch.save({"model": net, "epoch": 3}, tmp_path / "wrapped.pt")
    monkeypatch.delitem(sys.modules, module)
    return path


def test_a_pickled_model_whose_module_is_not_importable_names_pythonpath(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved_whole(tmp_path, monkeypatch, "persona_models_a")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, allow_pickle=True)
    message = str(info.value)
    assert "corrupt" not in message and "re-download" not in message
    assert "No module named 'persona_models_a'" in message and "PYTHONPATH=DIR:$PYTHONPATH" in message
    assert "\n" not in message
    # the same file with the module importable loads (the message's fix works)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    loaded = load_checkpoint(path, allow_pickle=True)
    assert type(loaded.model[2]).__name__ == "Gate"
    # a damaged file is still one: half of it is no pickle of missing code
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or not a checkpoint"):
        load_checkpoint(cut, allow_pickle=True)


def test_a_pickled_model_whose_class_was_renamed_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved_whole(tmp_path, monkeypatch, "persona_models_b")
    (tmp_path / "code" / "persona_models_b.py").write_text(GATE.format(name="Renamed"))
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, allow_pickle=True)
    message = str(info.value)
    assert "corrupt" not in message
    assert "module 'persona_models_b' defines no 'Gate'" in message and "state_dict" in message


def test_weights_holding_a_pickled_model_name_pythonpath_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved_whole(tmp_path, monkeypatch, "persona_models_c")
    (tmp_path / "factory").mkdir()
    (tmp_path / "factory" / "persona_factory_c.py").write_text(GATE.format(name="Gate"))
    monkeypatch.syspath_prepend(str(tmp_path / "factory"))
    with pytest.raises(CheckpointError, match=r"^weights .*wrapped\.pt: the pickled model's code cannot be imported "
                                              r"\(No module named 'persona_models_c'\); .*PYTHONPATH"):
        load_byo_model("persona_factory_c:make_net", tmp_path / "wrapped.pt", allow_pickle=True)

