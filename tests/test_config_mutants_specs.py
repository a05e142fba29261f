"""Mutation round on the eval config (kwta_robust.config) and its sections (kwta_robust.specs): each test pins what a
mutant changed without any earlier test noticing. Expected values are written by hand: exact one-line messages
naming the field and the fix, parsed values, the canonical dict."""

from __future__ import annotations

import hashlib

import pytest
import torch

from kwta_robust.config import EvalConfig, derive_seed, resolve_device
from kwta_robust.errors import ConfigError

BASE = {"dataset": "digits", "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": ["fgsm"]}
DRAWS = "verdict_draws: must be auto or an integer >= 1 (forward passes per verdict of a randomized model), got "


def build(**extra) -> EvalConfig:
    return EvalConfig.from_dict({**BASE, **extra})


def message(**extra) -> str:
    with pytest.raises(ConfigError) as info:
        build(**extra)
    text = str(info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("extra, expected", [
    ({"verdict_draws": 0}, DRAWS + "0"),
    ({"verdict_draws": True}, DRAWS + "True"),
    ({"verdict_draws": "x"}, DRAWS + "'x'"),
    ({"dataset": {"file": "x.npz"}, "data_root": "data"},
     "data_root: not used with dataset: {file: ...} (a data file is one split); remove it"),
    ({"dataset": {"file": "x.npz"}, "split": "train"},
     "split: not used with dataset: {file: ...} (a data file is one split); remove it"),
    ({"threats": [], "attacks": [], "suite": "quick"},
     "threats: attacks are configured but no threat model; add threats: [{norm: linf, epsilons: [0.3]}]"),
    ({"threats": [{"norm": "l2", "epsilons": [0.5, 2]}], "attacks": ["pgd"],
      "diagnostics": {"sanity": {"norm": "l2", "eps": 2}}},
     "diagnostics.sanity.eps: L2 2 is not above the largest evaluated L2 eps (2); the sanity attack needs a very "
     "large eps (Linf 1; L2 several times the largest evaluated eps)"),
    ({"attacks": [{"attack": "fgsm", "label": "sanity-pgd"}], "diagnostics": {"sanity": {}}},
     "attacks: label 'sanity-pgd' is the sanity attack's (diagnostics.sanity); give the attack another label"),
    ({"attacks": [{"attack": "pgd", "norms": ["l2"]}]},
     "attacks: 'pgd' (pgd) is limited to norms l2 (its norms: key) and the threats are linf; fix its norms or remove "
     "it"),
    ({"threats": [{"norm": "linf", "epsilons": []}]}, "threats[0].epsilons: give at least one epsilon"),
    ({"threats": [{"norm": "linf", "epsilons": [0.1, 0.1]}]},
     "threats[0].epsilons: duplicate epsilon values [0.1, 0.1]"),
    ({"threats": [{"norm": "linf", "epsilons": [0.1, 1.000001]}]},
     "threats[0].epsilons[1]: linf epsilon 1.000001 exceeds 1, the whole [0, 1] input range; use a value <= 1"),
    ({"attacks": [{"attack": "fgsm", "bpda_layers": "auto"}]},
     "attacks[0].bpda_layers: only BPDA attacks act on layers; remove it from 'fgsm'"),
    ({"attacks": [{"attack": "bpda", "params": {"layers": "auto"}}]},
     "attacks[0].params.layers: write the layers as bpda_layers next to params (auto, module names, globs or class "
     "names)"),
    ({"attacks": [{"attack": "bpda", "params": {"inner_params": {"steps": 5}}},
                  {"attack": "bpda", "params": {"inner_params": {"steps": 9}}}]},
     "attacks: label 'bpda' is used twice; give one of them a distinct 'label'"),  # a mapping is no label part
    ({"noise": [{"kind": "numenta", "levels": [-0.1]}]}, "noise[0].levels[0]: must be >= 0.0, got -0.1"),
    ({"noise": [{"kind": "numenta", "levels": []}]},
     "noise[0].levels: give at least one level (or leave it out for the probe's defaults)"),
    ({"noise": [{"kind": "numenta", "levels": [0.0, 1.5, 0.2]}]},
     "noise[0].levels[1]: numenta levels are fractions in [0, 1], got 1.5"),
    ({"noise": [{"kind": "numenta", "draws": 0}]}, "noise[0].draws: must be >= 1, got 0"),
    ({"diagnostics": {"budget_check": {"closest": 1.5}}},
     "diagnostics.budget_check.closest: must be between 0 and 1 (a fraction of the re-attacked survivors), got 1.5"),
    ({"diagnostics": {"budget_check": {"closest": -0.25}}},
     "diagnostics.budget_check.closest: must be between 0 and 1 (a fraction of the re-attacked survivors), got -0.25"),
    ({"diagnostics": {"budget_check": {"max_cost": 0}}},
     "diagnostics.budget_check.max_cost: must be > 0 (a fraction of the run's queries), got 0.0"),
    ({"diagnostics": {"budget_check": {"factor": 1}}}, "diagnostics.budget_check.factor: must be >= 2, got 1"),
    ({"diagnostics": {"budget_check": {"min_samples": 0}}},
     "diagnostics.budget_check.min_samples: must be >= 1, got 0"),
    ({"diagnostics": {"thresholds": {"wide_margin": "-0.5"}}},
     "diagnostics.thresholds.wide_margin: must be >= 0, got -0.5"),
    ({"diagnostics": {"thresholds": {"min_count": True}}},
     "diagnostics.thresholds.min_count: expected an integer, got True"),
    ({"diagnostics": {"thresholds": {"wide": 0.1}}},
     "diagnostics.thresholds: unknown key 'wide'; valid keys: wide_margin, single_step_margin, ladder_margin, "
     "min_count, eps_monotonic_tolerance, large_eps_max_accuracy, zero_gradient_fraction, output_rtol, "
     "probability_atol"),
    ({"diagnostics": {"thresholds": [0.1]}}, "diagnostics.thresholds: expected a mapping of keys, got list"),
    ({"diagnostics": {"sanity": {"epss": 2}}},
     "diagnostics.sanity: unknown key 'epss'; valid keys: norm, eps, attack, params"),  # sanity: SanitySpec | None
    ({"diagnostics": {"enabled": 1}}, "diagnostics.enabled: expected true or false, got 1"),
    # null means the default; a value that is merely false-like is still checked
    ({"threats": 0}, "threats: expected a list, got int"),
    ({"attacks": [{"attack": "fgsm", "label": 0}]}, "attacks[0].label: expected a string, got 0"),
    ({"attacks": [{"attack": "fgsm", "params": 0}]}, "attacks[0].params: expected a mapping of keys, got int"),
    ({"description": 5}, "description: expected text, got int"),
])
def test_a_bad_value_is_one_line_naming_the_field_and_the_fix(extra: dict, expected: str) -> None:
    assert message(**extra) == expected


@pytest.mark.parametrize("extra, expected", [
    ({"transfer": {"attack": "nope"}}, "transfer.attack: unknown attack 'nope'; known attacks: apgd-ce, "),
    ({"transfer": {"attack": "transfer"}}, "transfer.attack: 'transfer' needs a source model; "),
    ({"diagnostics": {"sanity": {"attack": "nope"}}}, "diagnostics.sanity.attack: unknown attack 'nope'; known "),
    ({"diagnostics": {"sanity": {"attack": "cw"}}},
     "diagnostics.sanity.norm: attack 'cw' does not support linf; it supports l2"),
    ({"diagnostics": {"sanity": {"attack": "bpda", "params": {"layers": "auto"}}}},
     "diagnostics.sanity.params.layers: write the layers as bpda_layers next to params"),
    ({"transfer": {"attack": "pgd", "params": {"stepz": 1}}}, "transfer: attack 'pgd': unknown parameter 'stepz'; "),
])
def test_sanity_and_transfer_attack_errors_name_their_own_keys(extra: dict, expected: str) -> None:
    """Before, the path and the key were two fields ('transfer: attack: unknown attack', 'diagnostics.sanity: norms:
    attack 'cw' ...' — a key the sanity entry does not have: its key is ``norm``)."""
    assert message(**extra).startswith(expected)


@pytest.mark.parametrize("seed, shown", [("x", "'x'"), (1.5, "1.5"), (True, "True"), (-1, "-1"),
                                         (2 ** 63, "9223372036854775808")])
def test_an_attack_seed_that_is_not_a_seed_is_refused_before_the_run(seed, shown: str) -> None:
    """Before, ``params: {seed: x}`` was accepted and the run stopped at the attack with a raw ValueError (invalid
    literal for int()); 1.5 and true were silently read as 1."""
    hint = " (the attack's random seed; leave it out to derive one from the config's seed), got "
    assert message(attacks=[{"attack": "pgd", "params": {"seed": seed}}]) == (
        "attacks[0].params.seed: must be an integer from 0 to 2**63 - 1" + hint + shown)
    assert message(transfer={"attack": "pgd", "params": {"seed": seed}}) == (
        "transfer.params.seed: must be an integer from 0 to 2**63 - 1" + hint + shown)
    assert [build(attacks=[{"attack": "pgd", "params": {"seed": s}}]).attacks[0].params for s in (0, 2 ** 63 - 1)] == [
        {"seed": 0}, {"seed": 9223372036854775807}]


def test_boundary_values_are_accepted() -> None:
    cfg = build(threats=[{"norm": "linf", "epsilons": [1]}, {"norm": "l2", "epsilons": [3, " 8/255 ", 0.1234567]}],
                attacks=["pgd"], verdict_draws=1, n_examples=1, seed=0, sample_seed=0,
                noise=[{"kind": "numenta", "levels": [0.0, 1.0], "draws": 1}],
                diagnostics={"budget_check": {"closest": 1, "factor": 2, "min_samples": 1, "max_cost": 1e-9},
                             "thresholds": {"wide_margin": 0, "min_count": 0, "output_rtol": 1}})
    assert cfg.threats[0].epsilons == (1.0,) and cfg.threats[1].epsilons == (3.0, 8 / 255, 0.1234567)
    assert cfg.threats[1].eps_text == ("3", "8/255", "0.1234567")  # as written (0.123457 would lose digits)
    assert cfg.verdict_draws == 1 and cfg.n_examples == 1 and cfg.noise[0].levels == (0.0, 1.0)
    assert cfg.diagnostics.budget_check.closest == 1.0 and cfg.diagnostics.budget_check.factor == 2
    thresholds = cfg.diagnostics.thresholds
    assert (thresholds.wide_margin, thresholds.min_count, thresholds.output_rtol) == (0.0, 0, 1.0)
    assert repr(thresholds.output_rtol) == "1.0"  # a float, as its default is (the config hash reads 1.0, not 1)
    assert build(diagnostics={"budget_check": {"closest": 0}}).diagnostics.budget_check.closest == 0.0
    assert build(diagnostics={"thresholds": None}).diagnostics.thresholds == build().diagnostics.thresholds
    assert build(diagnostics={"thresholds": None}).diagnostics.thresholds.min_count == 2  # null: the defaults
    assert build(verdict_draws=None).verdict_draws == "auto" and build(verdict_draws="auto").verdict_draws == "auto"


def test_sanity_eps_is_compared_with_its_own_norm_only() -> None:
    cfg = build(threats=[{"norm": "linf", "epsilons": [0.1]}, {"norm": "l2", "epsilons": [2]}], attacks=["pgd"],
                diagnostics={"sanity": {}})
    assert (cfg.diagnostics.sanity.norm, cfg.diagnostics.sanity.eps, cfg.diagnostics.sanity.label) == (
        "linf", 1.0, "sanity-pgd")
    off = build(attacks=[{"attack": "fgsm", "label": "sanity-pgd"}], diagnostics={"enabled": False, "sanity": {}})
    assert [a.label for a in off.labelled_attacks(10)] == ["sanity-pgd"]  # no sanity attack runs when disabled


def test_to_dict_is_the_canonical_config() -> None:
    cfg = build(threats=[{"norm": "linf", "epsilons": [" 8/255 ", 0.25]}], sample_seed=4, verdict_draws=3,
                attacks=["fgsm", {"attack": "bpda", "norms": ["linf"], "bpda_layers": "kwta*", "label": "b"}],
                diagnostics={"sanity": {}})
    data = cfg.to_dict()
    assert data["threats"] == [{"norm": "linf", "epsilons": ["8/255", "0.25"]}]
    assert data["attacks"] == [{"attack": "fgsm", "params": {}},
                               {"attack": "bpda", "params": {}, "label": "b", "norms": ["linf"],
                                "bpda_layers": ["kwta*"]}]
    assert (data["sample_seed"], data["verdict_draws"]) == (4, 3)
    assert data["diagnostics"]["sanity"] == {"norm": "linf", "eps": "1", "attack": "pgd", "params": {}}
    assert build(threats=[{"norm": "l2", "epsilons": "8/255"}], attacks=["pgd"]).threats[0].to_dict() == {
        "norm": "l2", "epsilons": ["8/255"]}  # one epsilon, written as text, is a list of one
    assert "verdict_draws" not in build().to_dict()  # auto: left out, so older hashes stay
    assert EvalConfig.from_dict(data) == cfg
    assert cfg.permutation_seed == 4 and build(seed=9).permutation_seed == 9


def test_the_hash_ignores_description_and_device_only() -> None:
    one = build(device="cpu", description="a")
    assert one.config_hash() == build(device="cuda:0", description="b").config_hash()
    assert one.config_hash() != build(device="cpu", batch_size=128).config_hash()


def test_derive_seed_is_the_first_four_bytes_of_a_sha256() -> None:
    """The documented recipe, computed here by hand: sha256 of the JSON ``[base, [str(key), ...]]``, its first four
    bytes read big-endian, the top bit cleared."""
    digest = hashlib.sha256(b'[7, ["pgd", "l2", "0.5"]]').digest()
    assert derive_seed(7, "pgd", "l2", 0.5) == ((digest[0] & 0x7F) << 24) + (digest[1] << 16) + (digest[2] << 8) + \
        digest[3]


def test_a_cuda_index_beyond_the_devices_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ConfigError) as info:
        resolve_device("cuda:2")
    assert str(info.value) == "device: 'cuda:2' does not exist (2 CUDA devices)"


def test_a_suite_entry_error_names_the_suite_and_the_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    from attacks import suites

    from kwta_robust.specs import suite_attacks

    monkeypatch.setattr(suites, "available_suites", lambda: ["mine"])
    monkeypatch.setattr(suites, "get_suite", lambda name, num_classes=None: [{"attack": "fgsm"}, {"attack": "nope"}])
    with pytest.raises(ConfigError) as info:
        suite_attacks("mine", 10)
    assert str(info.value).startswith("suite[mine][1].attack: unknown attack 'nope'; known attacks: apgd-ce, ")
