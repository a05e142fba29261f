"""Pins from the docstring audit of the configuration layer (``kwta_robust/config.py``, ``specs.py``,
``configio.py``, ``sweep/config.py``) and of the attacks' settings: the sweep's shared ``pruning:`` lists as valid
only the keys it takes, the toolkit's own example error, what a null ``sample_seed`` and an empty ``sanity:`` mean,
how a unit's seed is derived, and the defaults two docstrings state for gradient estimation and the budget check."""

from __future__ import annotations

import hashlib
import json

import pytest

from attacks.base import create_attack
from kwta_robust.attack_plan import unit_seeds
from kwta_robust.budget_check import scale_budget
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.configio import parse
from kwta_robust.errors import ConfigError
from kwta_robust.specs import NoiseSpec
from kwta_robust.sweep import SweepConfig
from test_sweep import tiny_config, write_config

THREATS = [{"norm": "linf", "epsilons": [0.1]}]


def test_the_sweeps_shared_pruning_lists_as_valid_only_the_keys_it_takes(tmp_path, capsys):
    # sweep/config.py: the sweep's pruning: holds "PruningConfig keys shared by every pruned cell (not the grid's
    # own)"; method and sparsity are refused there ("set by grid..."), so an unknown key's list must not offer them.
    data = tiny_config(pruning={"retrain_epocs": 1})
    with pytest.raises(ConfigError) as info:
        SweepConfig.from_dict(data)
    text = str(info.value)
    assert text.startswith("pruning: unknown key 'retrain_epocs'; valid keys: scope, schedule, rounds, ")
    assert "retrain_epochs" in text and "method" not in text.split("valid keys: ")[1].split(", ")
    assert "sparsity" not in text.split("valid keys: ")[1].split(", ")
    code = main(["sweep", str(write_config(tmp_path / "bad.yaml", data)), "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.strip() == f"error: {text}"
    with pytest.raises(ConfigError, match=r"^pruning\.sparsity: set by grid\.weight_sparsities; remove the key$"):
        SweepConfig.from_dict(tiny_config(pruning={"sparsity": 0.5}))


def test_the_toolkits_docstring_example_error_is_the_one_printed():
    # configio.py: parse(NoiseSpec, {"kind": "numenta", "draws": 0}, prefix="noise[0]")
    #              # ConfigError: noise[0].draws: must be >= 1, got 0
    with pytest.raises(ConfigError) as info:
        parse(NoiseSpec, {"kind": "numenta", "draws": 0}, prefix="noise[0]")
    assert str(info.value) == "noise[0].draws: must be >= 1, got 0"


def test_a_null_sample_seed_draws_the_permutation_from_seed():
    # config.py: "sample_seed: null  # seed of that permutation (null: use `seed`)"
    cfg = EvalConfig.from_dict({"dataset": "mnist5k", "seed": 7})
    assert cfg.sample_seed is None and cfg.permutation_seed == 7
    assert cfg.with_overrides(sample_seed=3).permutation_seed == 3


def test_an_empty_sanity_entry_is_pgd_at_linf_1_labelled_sanity_pgd():
    # specs.py SanitySpec defaults (norm linf, eps 1.0, attack pgd) and its label "sanity-<attack>"
    sanity = EvalConfig.from_dict({"dataset": "mnist5k", "threats": THREATS, "diagnostics": {"sanity": {}}}
                                  ).diagnostics.sanity
    assert (sanity.norm, sanity.eps, sanity.eps_text, sanity.attack, sanity.params) == ("linf", 1.0, "1", "pgd", {})
    assert sanity.label == "sanity-pgd"


def test_a_units_seed_is_a_hash_of_seed_label_norm_and_eps_not_seed_plus_an_offset():
    # config.py: "each (attack, norm, eps) unit seeded by a stable hash of (seed, label, norm, eps)"
    cfg = EvalConfig.from_dict({"dataset": "mnist5k", "threats": THREATS, "attacks": ["pgd", "fgsm"]})
    planned = [type("Planned", (), {"label": spec.label, "source": None})() for spec in cfg.labelled_attacks(10)]

    def by_hand(seed: int, label: str) -> int:
        text = json.dumps([seed, [label, "linf", repr(0.1)]])
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF

    for seed in (0, 1):
        assert unit_seeds(seed, planned, "linf", 0.1) == [by_hand(seed, "pgd"), by_hand(seed, "fgsm")]
    offsets = [b - a for a, b in zip(unit_seeds(0, planned, "linf", 0.1), unit_seeds(1, planned, "linf", 0.1))]
    assert offsets[0] != offsets[1]  # seed + a per-unit offset would move every unit by 1


@pytest.mark.parametrize("query_batch_size, given, on_cpu", [(100, None, 100), (4096, None, 256), (100, 500, 100)])
def test_gradient_estimations_forward_batch_is_capped_at_its_query_batch(query_batch_size, given, on_cpu):
    # adaptive.py: forward_batch_size "Default: min(256, query_batch_size) on CPU ..., query_batch_size on other
    # devices; a given value is capped at query_batch_size"
    import torch

    attack = create_attack("gradient-estimation", query_batch_size=query_batch_size, forward_batch_size=given)
    assert attack.forward_batch(torch.device("cpu")) == on_cpu
    assert attack.forward_batch(torch.device("meta")) == min(given or query_batch_size, query_batch_size)


def test_the_budget_checks_factor_multiplies_gradient_estimations_noise_pairs_and_bpdas_inner_steps():
    # specs.py BudgetCheckSpec.factor: "steps, BPDA: its inner attack's; gradient estimation: noise pairs per step;
    # Square: queries"
    assert scale_budget("gradient-estimation", {}, 3) == {"samples_start": 60, "samples_end": 600}
    assert scale_budget("square", {"n_queries": 10}, 3) == {"n_queries": 30}
    assert scale_budget("bpda", {"inner_params": {"steps": 5}}, 3) == {"inner_params": {"steps": 15}}
