"""Persona walk 51: a factory's weights that another set of its arguments built (a ReLU twin's file, given without
``--factory-kwargs 'relu={"activation": "relu"}'``, loaded into the factory's kWTA default with duty-cycle buffers)
read "state_dict lacks '2.duty_cycle' that the model has; the model definition differs": true, but the fix — the
factory's arguments — went unnamed. A factory's key or shape mismatch now names it; a kwta-robust checkpoint's
message is as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.errors import CheckpointError

FIX = ("the model the factory built differs: build it with the arguments the weights were saved with "
       "(--factory-kwargs; in compare 'LABEL={...}' for one model)")


class _Boosted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("duty_cycle", torch.zeros(8))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h


def make_net(activation: str = "kwta", width: int = 8) -> nn.Module:
    gate = _Boosted() if activation == "kwta" else nn.ReLU()
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), gate, nn.Linear(width, 10))


@pytest.mark.parametrize("saved, given, problem", [
    ({"activation": "relu"}, {}, "state_dict lacks '2.duty_cycle' that the model has"),
    ({}, {"activation": "relu"}, "state_dict has '2.duty_cycle' that the model lacks"),
    ({"activation": "relu", "width": 4}, {"activation": "relu"},
     "shape mismatch for '1.weight': file has (4, 64), model expects (8, 64)"),
])
def test_a_factory_weights_mismatch_names_the_factory_arguments(tmp_path: Path, saved: dict, given: dict,
                                                                 problem: str) -> None:
    torch.manual_seed(0)
    path = tmp_path / "twin.pt"
    torch.save(make_net(**saved).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_byo_model(f"{__name__}:make_net", path, factory_kwargs=given)
    assert str(info.value) == f"weights {path} (for {__name__}:make_net): {problem}; {FIX}"
