"""A plug-in attack whose ``draws`` declaration (``register_attack(..., draws=...)``, :mod:`attacks.seed_draws`)
raises — a bug of the plug-in, e.g. reading a parameter it does not have — stopped reading a config with a bare
``KeyError`` traceback from the seed-overlap warning (:mod:`kwta_robust.bpda_seeds`); it is now one
``RegistryError`` line naming the attack and the exception, as a declaration returning no name already was."""

from __future__ import annotations

from typing import Any, Mapping

import pytest

from attacks.base import REGISTRY, register_attack
from attacks.errors import RegistryError
from kwta_robust.bpda_seeds import first_draw
from test_seeds50_bpda_stage_seeds import bpda, warnings_of
from test_seeds52_plugin_draws import Jitter, plain


def reads_a_missing_parameter(params: Mapping[str, Any]) -> str | None:
    return "random start" if params["steps"] > 0 else None  # Jitter has no 'steps'


@pytest.fixture
def raising_plugin(request: pytest.FixtureRequest) -> str:
    register_attack("rev52-raises", norms=("linf",), draws=reads_a_missing_parameter)(Jitter)
    request.addfinalizer(lambda: REGISTRY.unregister("rev52-raises"))
    return "rev52-raises"


@pytest.mark.parametrize("where", ["plain", "bpda inner"])
def test_a_declaration_that_raises_is_one_registry_line_naming_the_attack(
        raising_plugin: str, where: str, caplog: pytest.LogCaptureFixture) -> None:
    attacks = [bpda("b", seed=5), plain(raising_plugin)] if where == "plain" else \
        [bpda("a", seed=5, inner=raising_plugin), bpda("b", seed=6)]
    with pytest.raises(RegistryError) as caught:
        warnings_of(caplog, attacks)
    message = str(caught.value)
    assert message.startswith("attack: attack 'rev52-raises': its draws declaration raised KeyError: 'steps'; make ")
    assert "\n" not in message and isinstance(caught.value.__cause__, KeyError)


def test_a_wrappers_unknown_inner_attack_keeps_its_own_registry_line() -> None:
    # transfer's declaration reads its inner attack's (attacks.seed_draws.wrapped_draw): that refusal is not re-wrapped
    with pytest.raises(RegistryError) as caught:
        first_draw("transfer", {"seed": 6, "inner": "rev52-no-such-attack"})
    assert "rev52-no-such-attack" in str(caught.value) and "declaration raised" not in str(caught.value)
