"""ModelSnapshot.verify on its own: each kind of change it promises to catch raises ModelChangedError naming the
culprit and the first changed entry; an unchanged model (and a forward pass in eval mode) passes. Before, the
train/eval-flag comparison had no test: with it removed, every test still passed (the runner's own eval-mode check
caught the attack case first)."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from kwta_robust.snapshot import ModelChangedError, ModelSnapshot


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Dropout(0.5)).eval()


def _retype(m: nn.Module) -> None:
    m[0].bias.data = m[0].bias.data.double()


CHANGES: dict[str, tuple[Callable[[nn.Module], object], str]] = {
    "value": (lambda m: m[0].weight.data.add_(1e-6), "probe changed the model's '0.weight'"),
    "buffer": (lambda m: m[1].running_mean.add_(1.0), "probe changed the model's '1.running_mean'"),
    "dtype": (_retype, "probe changed the model's '0.bias'"),
    "new-buffer": (lambda m: m[2].register_buffer("extra", torch.zeros(1)),
                   "probe changed the model's state_dict or buffer names ('2.extra')"),
    "train-flag": (lambda m: m[2].train(), "probe changed the train/eval flag of module '2'"),
    "root-flag": (lambda m: nn.Module.train(m, True), "probe changed the train/eval flag of module '<root>'"),
    "requires-grad": (lambda m: m[0].weight.requires_grad_(False),
                      "probe changed requires_grad of parameter '0.weight'"),
    "hook": (lambda m: m[1].register_forward_hook(lambda *a: None), "probe left the hooks of module '1' changed"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_change_is_caught_and_named(change: str) -> None:
    mutate, text = CHANGES[change]
    net = model()
    snap = ModelSnapshot.capture(net)
    snap.verify(net, "probe")  # unchanged: passes
    mutate(net)
    with pytest.raises(ModelChangedError) as caught:
        snap.verify(net, "probe")
    assert str(caught.value).startswith(text), str(caught.value)


def test_an_eval_forward_and_an_undone_change_pass() -> None:
    net = model()
    snap = ModelSnapshot.capture(net)
    with torch.no_grad():
        net(torch.rand(5, 4))
    handle = net[1].register_forward_hook(lambda *a: None)
    net[2].train()
    handle.remove()
    net[2].eval()
    assert snap.verify(net, "probe") is None
    net[0].weight.data.add_(1.0)  # the snapshot is a copy: changing the model afterwards is still seen
    with pytest.raises(ModelChangedError, match="'0.weight'"):
        snap.verify(net, "probe")
