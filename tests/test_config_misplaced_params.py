"""A config entry's key that is a parameter of the attack or noise probe it names, written beside ``kind`` or
``attack`` instead of under ``params`` (``{kind: numenta, value: 0.7469}``, the paper's bright value; ``{attack: pgd,
steps: 10}``), is one line that says to move it under ``params``, in the words of every other unknown key
(README persona walk 4: the line listed the valid keys without a word on where the probe's value goes)."""

from __future__ import annotations

import pytest

from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError
from kwta_robust.sweep.config import SweepConfig

ATTACKS = {"dataset": "mnist5k", "threats": [{"norm": "linf", "epsilons": [0.1]}]}


def message(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict(data)
    return str(info.value)


@pytest.mark.parametrize("data, expected", [
    ({"dataset": "mnist5k", "noise": [{"kind": "numenta", "draws": 3, "value": 0.7469}]},
     "noise[0]: unknown key 'value'; valid keys: kind, levels, draws, params (value is a parameter of noise probe "
     "'numenta': move it under params, as params: {value: 0.7469})"),
    ({**ATTACKS, "attacks": [{"attack": "pgd", "params": {"steps": 5}},
                             {"attack": "pgd", "label": "p", "loss": "margin"}]},
     "attacks[1]: unknown key 'loss'; valid keys: attack, params, norms, label, bpda_layers (loss is a parameter of "
     "attack 'pgd': move it under params, as params: {loss: \"margin\"})"),
])
def test_a_parameter_beside_the_name_says_to_move_it_under_params(data: dict, expected: str) -> None:
    assert message(data) == expected


def test_only_a_parameter_of_the_named_probe_gets_the_hint() -> None:
    misplaced = message({"dataset": "mnist5k", "noise": [{"kind": "numenta", "value": 1.0}]})
    assert misplaced.endswith("(value is a parameter of noise probe 'numenta': move it under params, as params: "
                              "{value: 1.0})")
    # a key no probe takes, and one the named probe does not take (gaussian has no value), keep the plain line
    assert message({"dataset": "mnist5k", "noise": [{"kind": "numenta", "valu": 1.0}]}) == (
        "noise[0]: unknown key 'valu'; valid keys: kind, levels, draws, params")
    assert message({"dataset": "mnist5k", "noise": [{"kind": "gaussian", "value": 1.0}]}) == (
        "noise[0]: unknown key 'value'; valid keys: kind, levels, draws, params")


def test_a_sweeps_eval_block_says_so_too() -> None:
    data = {"train": {"dataset": "mnist5k"}, "grid": {"kwta_ratios": [1.0], "weight_sparsities": [0.0]},
            "eval": {"dataset": "mnist5k", "noise": [{"kind": "numenta", "value": 0.7469}]}}
    with pytest.raises(ConfigError) as info:
        SweepConfig.from_dict(data)
    assert "move it under params, as params: {value: 0.7469}" in str(info.value)
