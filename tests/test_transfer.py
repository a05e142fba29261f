"""Transfer attack (attacks/transfer.py): crafted on a source model, never queries the target, never moves models."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.base import AttackConfigError, attack_info
from attacks.transfer import check_source_device
from kwta_robust.layers import KWTA

D, C = 16, 3


def mlp(activation: str, seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        act = KWTA(ratio=0.25) if activation == "kwta" else nn.ReLU()
        return nn.Sequential(nn.Linear(D, 32), act, nn.Linear(32, C)).eval()


def batch(model: nn.Module, n: int = 20) -> tuple[Tensor, Tensor]:
    x = torch.rand(n, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x).argmax(1)


class Untouchable(nn.Module):
    """A target that fails if it is ever called: transfer attacks must not query the target."""

    def forward(self, x: Tensor) -> Tensor:
        raise AssertionError("the transfer attack queried the target model")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_transfer_from_a_model_to_itself_is_the_inner_attack(norm: str) -> None:
    model = mlp("kwta")
    x, y = batch(model)
    threat = ThreatModel(norm, 0.3 if norm == "linf" else 1.0)
    transferred = create_attack("transfer", source=model, inner="pgd", inner_params={"steps": 10}, seed=3)(
        model, x, y, threat
    )
    direct = create_attack("pgd", steps=10, seed=3)(model, x, y, threat)
    assert torch.equal(transferred, direct)


def test_transfer_crafts_on_the_source_only() -> None:
    source = mlp("relu", seed=1)
    x, y = batch(source)
    threat = ThreatModel("linf", 0.5)
    attack = create_attack("transfer", source=source, inner="pgd", inner_params={"steps": 10}, source_name="relu-twin")
    assert attack.name == "transfer(pgd, source=relu-twin)"
    assert create_attack("transfer", source=source).name == "transfer(pgd)"
    assert attack_info("transfer").kind == "transfer"
    x_adv = attack(Untouchable(), x, y, threat)
    assert bool(threat.contains(x_adv, x).all())
    with torch.no_grad():
        assert bool((source(x_adv).argmax(1) != y).any()), "the inner attack did not run against the source"


def test_source_on_another_device_is_a_clear_error() -> None:
    source = nn.Sequential(nn.Linear(D, C, device="meta"))
    x = torch.rand(4, D)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(AttackConfigError, match=r"source: the source model is on meta but the inputs are on cpu"):
        check_source_device(source, x.device)
    attack = create_attack("transfer", source=source, inner="pgd", inner_params={"steps": 2})
    with pytest.raises(AttackConfigError, match="move it first"):
        attack(mlp("relu"), x, y, ThreatModel("linf", 0.1))
    assert next(source.parameters()).device.type == "meta", "the attack moved the source"


def test_device_check_accepts_matching_and_parameterless_sources() -> None:
    """Accepted (returns None): a source on the inputs' device, and one with no tensors at all; a source whose only
    tensor is a buffer is still checked (before, the test called the two accepted cases and asserted nothing)."""
    assert check_source_device(mlp("relu"), torch.device("cpu")) is None
    assert check_source_device(nn.Identity(), torch.device("meta")) is None  # nothing to move
    buffered = nn.Module()
    buffered.register_buffer("scale", torch.ones(1))
    assert check_source_device(buffered, torch.device("cpu")) is None
    with pytest.raises(AttackConfigError, match="the source model is on cpu but the inputs are on meta"):
        check_source_device(buffered, torch.device("meta"))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"source": "relu-twin"}, "source"),
        ({"inner": "transfer"}, "inner"),
        ({"inner": "no-such-attack"}, "no-such-attack"),
        ({"inner_params": {"steps": 0}}, "steps"),
    ],
)
def test_bad_configuration_is_a_clear_error(params: dict, field: str) -> None:
    params = {"source": mlp("relu"), **params}
    with pytest.raises(AttackConfigError, match=field):
        create_attack("transfer", **params)
