"""A plug-in attack could not say what it draws from its seed: ``kwta_robust.bpda_seeds`` kept that knowledge in its
own sets of built-in names. ``register_attack(..., draws=...)`` now takes it (``attacks.seed_draws``): a plug-in
declaring a random start is named beside the PGD stage of its seed, exactly then; one declaring another first draw or
none is not, and one that declares nothing keeps the behaviour from before (compared by its name alone as a plain
attack, whatever its draws as a BPDA stage)."""

from __future__ import annotations

from typing import Any, Mapping

import pytest
import torch

from attacks.base import REGISTRY, register_attack
from attacks.registry import RegistryError
from kwta_robust.bpda_seeds import first_draw
from test_seeds50_bpda_stage_seeds import bpda, warnings_of  # a digits config's warnings; a 3-stage BPDA over PGD

STAGE_1 = "'p' and 'b' stage 1 (its inner 'pgd', whose seeded random start is drawn alike) both take seed 6"


class Jitter:
    """A plug-in attack returning its inputs (jittered starts are not run here): only its registration matters."""

    def __init__(self, jitter: bool = True, seed: int = 0) -> None:
        self.jitter, self.seed = jitter, seed

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor, threat: Any) -> torch.Tensor:
        return x.clone()


def jitter_draw(params: Mapping[str, Any]) -> str | None:
    return "random start" if params["jitter"] else None


@pytest.fixture
def plugins(request: pytest.FixtureRequest) -> None:
    for name, draws in (("seeds52-start", jitter_draw), ("seeds52-other", lambda params: "seeds52 noise"),
                        ("seeds52-silent", None)):
        register_attack(name, norms=("linf",), draws=draws)(Jitter)
        request.addfinalizer(lambda name=name: REGISTRY.unregister(name))


def plain(name: str, seed: int = 6, **params: object) -> dict:
    return {"attack": name, "label": "p", "params": {"seed": seed, **params}}


def test_a_plugin_is_named_exactly_when_it_declares_a_random_start(plugins: None,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    found = warnings_of(caplog, [bpda("b", seed=5), plain("seeds52-start")])
    assert len(found) == 1 and STAGE_1 in found[0]
    assert first_draw("seeds52-start", {}) == "random start" and first_draw("seeds52-other", {}) == "seeds52 noise"
    for quiet in (plain("seeds52-start", jitter=False), plain("seeds52-start", seed=9), plain("seeds52-other"),
                  plain("seeds52-silent")):
        assert warnings_of(caplog, [bpda("b", seed=5), quiet]) == [], quiet
    assert first_draw("seeds52-silent", {}) == "seeds52-silent"  # declares nothing: its own name, as before
    # as a BPDA stage: declared alike (or undeclared, its draws unknown) beside a PGD stage, named; else not
    for inner, named in (("seeds52-start", True), ("seeds52-silent", True), ("seeds52-other", False)):
        pair = warnings_of(caplog, [bpda("a", seed=5, inner=inner), bpda("b", seed=6)])
        assert len(pair) == named and all("'a' stage 1 and 'b' stage 0 both take inner-attack seed 6" in line
                                          for line in pair), inner


def test_a_declaration_that_is_no_function_or_names_nothing_is_one_line(plugins: None) -> None:
    with pytest.raises(RegistryError, match="attack 'seeds52-bad' has draws 'random start'; use a function") as exc:
        register_attack("seeds52-bad", draws="random start")  # type: ignore[arg-type]
    assert "\n" not in str(exc.value) and "seeds52-bad" not in REGISTRY.names()
    register_attack("seeds52-bad", norms=("linf",), draws=lambda params: 3)(Jitter)  # type: ignore[arg-type]
    try:
        with pytest.raises(RegistryError, match="'seeds52-bad': its draws declaration returned 3; return") as exc:
            first_draw("seeds52-bad", {})
        assert "\n" not in str(exc.value)
    finally:
        REGISTRY.unregister("seeds52-bad")
