"""The contract every registered attack keeps, checked for every name in ``available_attacks()``.

For each attack and each norm: output shape, dtype and device of ``x``; inside the eps ball and the bounds; the
model untouched (state_dict tensors, every module's training flag, parameter gradients and ``requires_grad``);
reproducible for a seed; the caller's global RNG state unchanged. Norms an attack does not support must be
refused with :class:`AttackConfigError`. The model is a small kWTA CNN (BatchNorm, boosting duty cycles,
dropout) left in a mixed train/eval state before each call, so running it in train mode would show. Every
attack also handles empty and single-sample batches.

Attacks needing constructor arguments or small budgets get them from ``ATTACK_PARAMS`` (default ``{}``); a new
attack registered anywhere in the package is picked up automatically.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import nn

from attacks import Attack, available_attacks, create_attack
from attacks.base import AttackConfigError, ThreatModel, attack_info
from attack_fixtures import trained_cnn

Context = dict[str, Any]

CONTRACT_EPS = {"linf": 0.1, "l2": 1.0}

#: Tiny budgets (and required arguments) per attack; anything not listed is built with its defaults.
ATTACK_PARAMS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "pgd": lambda c: {"steps": 3},
    "apgd-ce": lambda c: {"steps": 3},
    "apgd-dlr": lambda c: {"steps": 3},
    "apgd-t": lambda c: {"steps": 3, "n_target_classes": 2},
    "fab": lambda c: {"steps": 3},
    "fab-t": lambda c: {"steps": 3, "n_target_classes": 2},
    "cw": lambda c: {"steps": 5, "search_steps": 2},
    "deepfool": lambda c: {"steps": 3},
    "square": lambda c: {"n_queries": 20},
    "hopskipjump": lambda c: {
        "steps": 1, "initial_gradient_eval_steps": 5, "max_gradient_eval_steps": 10, "init_directions": 20,
        "init_steps": 10,
    },
    "boundary": lambda c: {"steps": 20, "init_directions": 20, "init_steps": 10},
    "bpda": lambda c: {"surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 3}},
    "gradient-estimation": lambda c: {"steps": 2, "samples_start": 4, "samples_end": 8},
    "eot": lambda c: {"steps": 2, "eot_samples": 2},
    "transfer": lambda c: {"source": c["source"], "inner": "pgd", "inner_params": {"steps": 3}},
}

CASES = [(name, norm) for name in available_attacks() for norm in ("linf", "l2")]


@pytest.fixture(scope="module")
def context() -> Context:
    model, x, y = trained_cnn("kwta")
    source, _, _ = trained_cnn("relu")
    return {"model": model, "source": source, "x": x[:12].clone(), "y": y[:12].clone()}


def _build(name: str, context: Context, seed: int = 0) -> Any:
    params = ATTACK_PARAMS.get(name, lambda c: {})(context)
    return create_attack(name, seed=seed, **params)


def _mixed_mode(model: nn.Module) -> dict[str, bool]:
    """Train mode overall with the first BatchNorm in eval: flags an attack must restore one by one."""
    model.train()
    model[1].eval()
    return {name: m.training for name, m in model.named_modules()}


def _rng_states() -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states += torch.cuda.get_rng_state_all()
    return states


@pytest.mark.parametrize(("name", "norm"), CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_attack_contract(name: str, norm: str, context: Context) -> None:
    model, x, y = context["model"], context["x"], context["y"]
    threat = ThreatModel(norm, CONTRACT_EPS[norm])
    if norm not in attack_info(name).norms:
        with pytest.raises(AttackConfigError, match=norm):
            _build(name, context)(model.eval(), x, y, threat)
        return

    flags = _mixed_mode(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    requires_grad = [p.requires_grad for p in model.parameters()]
    rng_before = _rng_states()
    x_before = x.clone()

    y_before = y.clone()
    attack = _build(name, context)
    assert isinstance(attack, Attack) and isinstance(attack.name, str)
    x_adv = attack(model, x, y, threat)

    assert all(torch.equal(a, b) for a, b in zip(rng_before, _rng_states())), "global RNG state changed"
    assert {n: m.training for n, m in model.named_modules()} == flags, "training flags not restored"
    after = model.state_dict()
    assert state.keys() == after.keys()
    for key, value in state.items():
        assert torch.equal(value, after[key]), f"model state {key} changed"
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    assert all(p.grad is None for p in model.parameters()), "attack left parameter gradients"
    assert torch.equal(x, x_before) and torch.equal(y, y_before), "attack modified its inputs"

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert bool(threat.contains(x_adv, x).all()), f"outside the {norm} ball or the bounds"

    _mixed_mode(model)
    again = _build(name, context)(model, x, y, threat)
    assert torch.equal(x_adv, again), "not reproducible with the same seed"


@pytest.mark.parametrize("name", available_attacks())
@pytest.mark.parametrize("size", [0, 1])
def test_tiny_batches(name: str, size: int, context: Context) -> None:
    """Empty and single-sample batches (the cascade hands attacks whatever is still robust)."""
    model = context["model"].eval()
    norm = attack_info(name).norms[0]
    x, y = context["x"][:size], context["y"][:size]
    threat = ThreatModel(norm, CONTRACT_EPS[norm])
    x_adv = _build(name, context)(model, x, y, threat)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert bool(threat.contains(x_adv, x).all())
