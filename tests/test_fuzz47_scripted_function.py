"""A kWTA written as a TorchScript function (``@torch.jit.script def kwta(h, k)``) called inline in a residual
block's ``forward``, ``x + kwta(conv(x), k)`` (found by the wild-model fuzzer, tests/fuzz47_wild.py): its operations
run in TorchScript's interpreter, which the layer probe's and BPDA's ``TorchFunctionMode`` never sees, so the record
read the model as a plain ReLU network (no kWTA layer, no flag) and BPDA left the gate's 0/1 mask cutting the
gradient. Now the model is refused in one line naming the block and the function and the fix, as a scripted module
is. The same function called by a leaf module (read from its output) still runs, BPDA acting on it. Inputs
``[6, 1, 8, 8]``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.api import evaluate_model
from kwta_robust.errors import KwtaRobustError
from test_fuzz46_fixed_seeds import CONFIG

X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@torch.jit.script
def scripted_kwta(h: Tensor, k: int) -> Tensor:
    """Each sample's ``k`` largest of ``[N, ...]`` kept, the rest zeroed."""
    f = h.flatten(1)
    return (f * (f >= f.topk(k, dim=1).values[:, -1:]).to(f.dtype)).view_as(h)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + scripted_kwta(self.conv(x), 64)


class Leaf(nn.Module):
    def forward(self, h: Tensor) -> Tensor:
        return scripted_kwta(h, 64)


def net(gate: nn.Module) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), gate, nn.Flatten(), nn.Linear(256, 3)).eval()


def test_a_block_calling_a_scripted_kwta_function_is_refused_in_one_line_naming_it() -> None:
    model = net(Block())
    with torch.no_grad():
        y = model(X).argmax(1)
    with pytest.raises(KwtaRobustError) as caught:
        evaluate_model(model, CONFIG, X, y, threads=1)
    message = str(caught.value)
    assert "\n" not in message
    assert "its module '1' calls the TorchScript function 'scripted_kwta' in forward (drop its @torch.jit.script)" \
        in message


def test_a_leaf_calling_it_still_runs_with_bpda_on_it_and_eager_blocks_are_not_named() -> None:
    from attacks.inline_gates import scripted_call  # here: the refusal test runs on code without it

    model = net(Leaf())
    with torch.no_grad():
        y = model(X).argmax(1)
    record = evaluate_model(model, CONFIG, X, y, threads=1)
    assert [r.bpda_layers for r in record.results if r.attack == "bpda"] == [{"1": "wrapped gate/volume"}] * 2
    assert (scripted_call(Block()), scripted_call(Leaf()), scripted_call(nn.Sequential())) == \
        ("scripted_kwta", "scripted_kwta", None)
