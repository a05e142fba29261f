"""Mutation review of attacks/seed_draws.py: what each built-in declaration names (PGD with and without its random
start, FAB by its restarts, APGD, the deterministic attacks), that given parameters override the defaults, what a
plug-in without a declaration and one whose declaration returns an empty name or raises a RegistryError of its own
give, and what a wrapper's inner attack draws from the wrapper's seed (``wrapped_draw``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from attacks.base import REGISTRY, register_attack
from attacks.errors import RegistryError
from attacks.seed_draws import MODEL_NOISE, RANDOM_START, first_draw_of, wrapped_draw


class Quiet:
    """A plug-in attack returning its inputs: only its registration matters."""

    def __init__(self, restarts: int = 1, seed: int = 0) -> None:
        self.restarts, self.seed = restarts, seed

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor, threat: Any) -> torch.Tensor:
        return x.clone()


def test_the_built_in_declarations() -> None:
    assert first_draw_of("pgd", {}) == RANDOM_START and first_draw_of("pgd", {"random_start": True}) == RANDOM_START
    assert first_draw_of("pgd", {"random_start": False}) is None  # the given value over the default (True)
    assert first_draw_of("apgd-ce", {}) == RANDOM_START
    assert [first_draw_of("fab", {"restarts": r}) for r in (0, 1, 2, 5)] == [None, None, RANDOM_START, RANDOM_START]
    assert first_draw_of("fab", {}) is None  # its default: one restart, from x
    assert first_draw_of("fab", {"restarts": "2"}) == RANDOM_START  # no int: FAB's own check refuses it, in its words
    for name in ("fgsm", "cw", "deepfool"):
        assert first_draw_of(name, {}) is None, name


def test_a_plugin_without_a_declaration_draws_under_its_own_name_and_a_bad_name_is_refused(
        request: pytest.FixtureRequest) -> None:
    def inner_error(params: Any) -> str:
        raise RegistryError("attack", "mut53 inner attack 'nope' is not registered")

    for name, draws in (("mut53-silent", None), ("mut53-empty", lambda params: ""),
                        ("mut53-inner", inner_error), ("mut53-restarts", lambda params: f"r{params['restarts']}")):
        register_attack(name, norms=("linf",), draws=draws)(Quiet)
        request.addfinalizer(lambda name=name: REGISTRY.unregister(name))
    assert first_draw_of("mut53-silent", {}) == "mut53-silent"
    assert first_draw_of("mut53-restarts", {}) == "r1" and first_draw_of("mut53-restarts", {"restarts": 3}) == "r3"
    with pytest.raises(RegistryError, match=r"attack 'mut53-empty': its draws declaration returned ''; return"):
        first_draw_of("mut53-empty", {})
    with pytest.raises(RegistryError) as raised:  # a wrapper's own error passes as it is, not as a plug-in's bug
        first_draw_of("mut53-inner", {})
    assert str(raised.value).endswith("mut53 inner attack 'nope' is not registered")
    assert "declaration raised" not in str(raised.value)


def test_what_a_wrapper_draws_first_from_its_seed() -> None:
    assert wrapped_draw("pgd", None, 5) == RANDOM_START  # the inner attack takes the wrapper's seed
    assert wrapped_draw("pgd", {"seed": 5}, 5) == RANDOM_START
    assert wrapped_draw("pgd", {"seed": 6}, 5) == MODEL_NOISE  # its own seed: the wrapper's seed draws the model's
    assert wrapped_draw("pgd", {"steps": 3}, 0) == RANDOM_START
    assert wrapped_draw("pgd", {"random_start": False}, 5) == MODEL_NOISE
    assert wrapped_draw("fgsm", None, 5) == MODEL_NOISE
    assert wrapped_draw("fab", {"restarts": 3}, 5) == RANDOM_START
