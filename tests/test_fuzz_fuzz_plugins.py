"""Fuzz round on attack plug-ins whose factory misbehaves when the config builds the attack: one raising a
``ValueError`` was reported as the garbled ``attacks[1].boom`` (a message read as a field path), a ``RuntimeError``
or ``KeyError`` escaped as a raw traceback, and one returning something that is not callable (``None``, a number,
an object without ``__call__``) was accepted and failed on the first batch as "attack 'NoneType' raised TypeError
... (at attacks/cascade.py:78); fix the code there" — after the clean pass and every earlier attack. Each is now
one line at the entry naming the attack and its factory, before any work; a factory returning a callable object is
accepted."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import nn

from attacks.base import REGISTRY, register_attack
from kwta_robust.api import evaluate_model
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError


def _raising(exc: Exception) -> Callable[..., Any]:
    def factory(seed: int = 0) -> Any:
        raise exc
    return factory


class _NoCall:
    name = "no-call"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed


class _Calls(_NoCall):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Any) -> torch.Tensor:
        return x.clone()


FACTORIES: dict[str, Callable[..., Any]] = {
    "value": _raising(ValueError("boom")), "runtime": _raising(RuntimeError("no device\nsecond line")),
    "key": _raising(KeyError("k")), "none": lambda seed=0: None, "int": lambda seed=0: 42, "no-call": _NoCall,
    "calls": _Calls,
}


@pytest.fixture
def misbehaving() -> None:
    with REGISTRY.preserved():
        for name, factory in FACTORIES.items():
            register_attack(f"fz-{name}", norms=("linf",), kind="white-box")(factory)
        yield


def _config(entry: dict) -> dict:
    return {"dataset": "digits", "n_examples": 4, "batch_size": 4, "threats": [{"norm": "linf", "epsilons": [0.1]}],
            "attacks": ["fgsm"], "diagnostics": {"enabled": False}, **entry}


RAISED = "its factory raised {}; fix the factory (or its params)"
RETURNED = "its factory returned {}, not an attack (a callable attack(model, x, y, threat) -> x_adv); fix the factory"


@pytest.mark.parametrize("name, detail", [
    ("value", RAISED.format("ValueError: boom")), ("runtime", RAISED.format("RuntimeError: no device")),
    ("key", RAISED.format("KeyError: 'k'")), ("none", RETURNED.format("NoneType")), ("int", RETURNED.format("int")),
    ("no-call", RETURNED.format("_NoCall")),
])
@pytest.mark.parametrize("where, entry", [
    ("attacks[1]", lambda a: {"attacks": ["fgsm", {"attack": a}]}),
    ("diagnostics.sanity", lambda a: {"diagnostics": {"enabled": False, "sanity": {"attack": a, "eps": 1}}}),
    ("transfer", lambda a: {"transfer": {"attack": a}}),
])
def test_a_factory_that_fails_or_returns_no_attack_is_one_line_at_the_entry(
        misbehaving: None, name: str, detail: str, where: str, entry: Callable[[str], dict]) -> None:
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict(_config(entry(f"fz-{name}")))
    assert str(info.value) == f"{where}: attack 'fz-{name}': {detail}"


def test_it_is_refused_before_the_clean_pass_and_a_callable_object_runs(misbehaving: None) -> None:
    calls: list[int] = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    net.register_forward_hook(lambda *_: calls.append(1))
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"^attacks\[1\]: attack 'fz-none': its factory returned NoneType"):
        evaluate_model(net, _config({"attacks": ["fgsm", "fz-none"]}), x, y)
    assert calls == []  # not one forward pass
    record = evaluate_model(net, _config({"attacks": ["fgsm", "fz-calls"]}), x, y).to_dict()
    assert [r["attack"] for r in record["results"]] == ["fgsm", "fz-calls"]
