"""EvalConfig: YAML parsing, one-line validation errors naming the field, labels, suites, hashes, shipped configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kwta_robust.config import EvalConfig, derive_seed, load_config, resolve_device
from kwta_robust.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "eval_configs"


def base(**extra) -> dict:
    data = {
        "dataset": "mnist5k",
        "threats": [{"norm": "linf", "epsilons": [0.1, "8/255"]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 5}}],
    }
    data.update(extra)
    return data


def test_valid_config_and_defaults() -> None:
    cfg = EvalConfig.from_dict(base(noise=[{"kind": "numenta", "draws": 2}]))
    assert cfg.split == "test" and cfg.mode == "cascade" and cfg.seed == 0 and cfg.device == "auto"
    assert cfg.threats[0].epsilons == (0.1, 8 / 255)
    assert cfg.threats[0].eps_text == ("0.1", "8/255")
    assert cfg.noise[0].levels == tuple(round(0.05 * i, 2) for i in range(11))  # Numenta's protocol by default
    assert [a.label for a in cfg.labelled_attacks(10)] == ["pgd"]
    assert cfg.diagnostics.enabled and cfg.diagnostics.sanity is None
    again = EvalConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.config_hash() == cfg.config_hash()


@pytest.mark.parametrize(
    "data, message",
    [
        (base(epochs=3), "config: unknown key 'epochs'; valid keys: description, dataset"),
        (base(threats=[{"norm": "linf", "epsilon": [0.3]}]),
         "threats[0]: unknown key 'epsilon'; valid keys: norm, epsilons"),
        (base(threats=[{"norm": "linf", "epsilons": ["8/2x5"]}]), "threats[0].epsilons[0]: cannot parse '8/2x5'"),
        (base(threats=[{"norm": "linf", "epsilons": [1.5]}]), "threats[0].epsilons[0]: linf epsilon 1.5 exceeds 1"),
        (base(threats=[{"norm": "linf", "epsilons": [-0.1]}]),
         "threats[0].epsilons[0]: epsilon must be a finite number >= 0"),
        (base(threats=[{"norm": "l1", "epsilons": [1]}]), "threats[0].norm: unknown norm 'l1'; known norms: linf, l2"),
        (base(attacks=[{"attack": "pgdd"}]), "attacks[0].attack: unknown attack 'pgdd'; known attacks: apgd-ce"),
        (base(attacks=[{"attack": "pgd", "parms": {}}]),
         "attacks[0]: unknown key 'parms'; valid keys: attack, params, norms, label"),
        (base(attacks=[{"attack": "pgd", "params": {"steps": 0}}]),
         "attacks[0]: attack 'pgd': steps must be an integer >= 1"),
        (base(attacks=[{"attack": "cw", "norms": ["linf"]}]), "attacks[0].norms: attack 'cw' does not support linf"),
        (base(attacks=[{"attack": "transfer"}]), "attacks[0].attack: 'transfer' needs a source model"),
        (base(attacks=["pgd", "pgd"]), "label 'pgd' is used twice"),
        (base(mode="union"), "mode: unknown mode 'union'; known modes: cascade, independent"),
        # tables write the norm L2; the config's name is l2
        (base(threats=[{"norm": "L2", "epsilons": [0.5]}]), "threats[0].norm: unknown norm 'L2'; known norms: linf, l2 "
         "(names are case-sensitive: write 'l2')"),
        (base(n_examples=0), "n_examples: must be >= 1, got 0"),
        (base(batch_size="big"), "batch_size: expected an integer, got 'big'"),
        (base(suite="strongest"), "suite: unknown suite 'strongest'; known suites:"),
        (base(noise=[{"kind": "speckle"}]),
         "noise[0].kind: unknown noise probe 'speckle'; known noise probes: gaussian"),
        (base(noise=[{"kind": "numenta", "levels": [0.0, 1.5]}]),
         "noise[0].levels[1]: numenta levels are fractions in [0, 1], got 1.5"),
        (base(diagnostics={"thresholds": {"wide": 0.1}}),
         "diagnostics.thresholds: unknown key 'wide'; valid keys: wide_margin"),
        (base(diagnostics={"sanity": {"eps": 2}}), "diagnostics.sanity.eps: linf epsilon 2 exceeds 1"),
        # a sanity attack inside the evaluated balls may well leave survivors: no evidence of masking
        (base(threats=[{"norm": "l2", "epsilons": [0.5, 2]}], diagnostics={"sanity": {"norm": "l2", "eps": 0.3}}),
         "diagnostics.sanity.eps: L2 0.3 is not above the largest evaluated L2 eps (2); the sanity attack needs"),
        (base(threats=[]), "threats: attacks are configured but no threat model"),
        ({"threats": []}, "config: missing key 'dataset'"),
        (base(attacks=[{"attack": "cw"}]), "attacks: 'cw' (cw) supports none of the configured norms (linf)"),
        # BPDA runs at the norms of its inner attack: cw at Linf would minimise L2 and be clipped to the Linf ball
        (base(attacks=[{"attack": "bpda", "params": {"inner": "cw"}, "norms": ["linf"]}]),
         "attacks[0].norms: attack 'bpda' with inner 'cw' does not support linf; it supports l2"),
        (base(attacks=[{"attack": "bpda", "params": {"inner": "cw"}}]),
         "attacks: 'bpda' (bpda with inner 'cw') supports none of the configured norms (linf)"),
        # two epsilons records write alike were two columns of one name and one --save-adversarial key
        (base(threats=[{"norm": "linf", "epsilons": [0.1, 0.1000000001]}]), "threats[0].epsilons: 0.1 and "
         "0.1000000001 are both written 0.1 in records and tables; keep one, or make them differ within 6 significant"),
        (base(threats=[{"norm": "l2", "epsilons": ["1/3", 0.3333333]}]),
         "'1/3' and 0.3333333 are both written 0.333333"),
    ],
)
def test_validation_errors_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict(data)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_bpda_runs_at_the_norms_its_inner_attack_supports() -> None:
    cfg = EvalConfig.from_dict(base(threats=[{"norm": "linf", "epsilons": [0.1]}, {"norm": "l2", "epsilons": [1]}],
                                    attacks=[{"attack": "bpda", "params": {"inner": "cw"}, "label": "bpda-cw"},
                                             {"attack": "bpda", "label": "bpda-pgd"}]))
    assert [(s.label, s.applies_to("linf"), s.applies_to("l2")) for s in cfg.labelled_attacks(10)] == [
        ("bpda-cw", False, True), ("bpda-pgd", True, True)]


def test_unknown_suite_names_its_field_once() -> None:
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict({"dataset": "digits", "suite": "strongest"})
    assert str(info.value).startswith("suite: unknown suite 'strongest'; known suites: ")  # was "suite.suite: ..."


def test_labels_for_repeated_attacks_and_suites() -> None:
    cfg = EvalConfig.from_dict(base(attacks=[
        {"attack": "pgd", "params": {"steps": 10}}, {"attack": "pgd", "params": {"steps": 100}},
        {"attack": "fgsm", "label": "one-step"},
    ]))
    assert [a.label for a in cfg.labelled_attacks(10)] == ["pgd(steps=10)", "pgd(steps=100)", "one-step"]
    suite = EvalConfig.from_dict(base(suite="quick", attacks=[{"attack": "square", "params": {"n_queries": 10}}]))
    labelled = suite.labelled_attacks(10)
    assert [a.attack for a in labelled] == ["fgsm", "pgd", "square"]
    assert labelled[1].params == {"steps": 20}


def test_norm_restriction() -> None:
    cfg = EvalConfig.from_dict({
        "dataset": "mnist5k", "threats": [{"norm": "linf", "epsilons": [0.3]}, {"norm": "l2", "epsilons": [2.0]}],
        "attacks": [{"attack": "pgd", "norms": ["l2"]}, {"attack": "cw"}, "fgsm"],
    })
    specs = cfg.labelled_attacks(10)
    assert [s.label for s in specs if s.applies_to("linf")] == ["fgsm"]
    assert [s.label for s in specs if s.applies_to("l2")] == ["pgd", "cw", "fgsm"]


def test_yaml_files_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dataset: mnist5k\nthreats:\n  - {norm: linf, epsilons: ['8/255']}\nattacks: [fgsm]\n")
    cfg = load_config(path, n_examples=50, seed=3, batch_size=None)
    assert cfg.n_examples == 50 and cfg.seed == 3 and cfg.batch_size == 256
    assert cfg.config_hash() != load_config(path).config_hash()
    with pytest.raises(ConfigError, match="n_examples: must be >= 1"):
        load_config(path, n_examples=0)
    with pytest.raises(ConfigError, match="no such file"):
        EvalConfig.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line"):
        EvalConfig.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        EvalConfig.from_yaml(tmp_path / "empty.yaml")


def test_hash_ignores_description_only() -> None:
    a = EvalConfig.from_dict(base(description="first"))
    assert a.config_hash() == EvalConfig.from_dict(base(description="second")).config_hash()
    assert a.config_hash() != EvalConfig.from_dict(base(seed=1)).config_hash()


def test_derive_seed_is_stable_and_distinct() -> None:
    """Stable across processes (records written by one run are resumed by another): the seed computed in two
    interpreters with different string-hash salts equals this one's (before, the test compared two calls in one
    process, which a seed from Python's salted ``hash()`` passes)."""
    code = "from kwta_robust.config import derive_seed; print(derive_seed(0, 'pgd', 'linf', 0.3))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    found = {subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONHASHSEED": salt}, check=True,
                            capture_output=True, text=True).stdout.strip() for salt in ("1", "2")}
    assert found == {str(derive_seed(0, "pgd", "linf", 0.3))}
    seeds = {derive_seed(s, a, "linf", e) for s in (0, 1) for a in ("pgd", "bpda") for e in (0.1, 0.3)}
    assert len(seeds) == 8 and all(0 <= s < 2**31 for s in seeds)


def test_unit_seeds_differ_by_attack_norm_and_eps_and_transfer_shares_one() -> None:
    """Each (attack, norm, eps) unit draws its own seed (a unit at another eps must not replay this one's random
    starts); every transfer attack keys on ``transfer``, whatever its label."""
    from kwta_robust.attack_plan import PlannedAttack, unit_seeds

    pgd, fgsm = PlannedAttack("pgd", "pgd", {}), PlannedAttack("fgsm", "fgsm", {})
    seeds = {(n, e): unit_seeds(0, [pgd, fgsm], n, e) for n in ("linf", "l2") for e in (0.1, 0.3)}
    assert len({s for pair in seeds.values() for s in pair}) == 8
    assert seeds["linf", 0.1] == unit_seeds(0, [pgd, fgsm], "linf", 0.1) != unit_seeds(1, [pgd, fgsm], "linf", 0.1)
    one, two = PlannedAttack("transfer", "pgd", {}, source="a"), PlannedAttack("transfer(b)", "pgd", {}, source="b")
    assert unit_seeds(0, [one], "linf", 0.1) == unit_seeds(0, [two], "linf", 0.1) == [
        derive_seed(0, "transfer", "linf", repr(0.1))]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="cannot parse 'gpu0'"):
        resolve_device("gpu0")
    for other in ("mps", "meta"):  # accepted by torch.device, failing mid-run (float64 bookkeeping): refused first
        with pytest.raises(ConfigError, match=f"device: '{other}' is not supported .*use auto, cpu, cuda or cuda:N"):
            resolve_device(other)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available; set device: cpu or auto in the config$"):
            resolve_device("cuda")


EVAL_CONFIGS = ("quick.yaml", "mnist5k-full.yaml", "cifar10.yaml", "noise.yaml", "quickstart.yaml")


@pytest.mark.parametrize("name", EVAL_CONFIGS)
def test_shipped_configs_are_valid(name: str) -> None:
    path = CONFIG_DIR / name
    cfg = EvalConfig.from_yaml(path)
    assert cfg.description, f"{path.name} should say what it is for"
    specs = cfg.labelled_attacks(10)
    assert cfg.noise or specs




def test_readme_example_is_valid_and_complete() -> None:
    """The commented example in eval_configs/README.md is a valid config that uses every key."""
    import dataclasses

    import yaml

    from kwta_robust.config import AttackSpec, DiagnosticsSpec, NoiseSpec, SanitySpec, ThreatSpec, TransferSpec
    from kwta_robust.diagnostics import Thresholds

    text = (CONFIG_DIR / "README.md").read_text()
    block = text.split("```yaml", 1)[1].split("```", 1)[0]
    data = yaml.safe_load(block)
    cfg = EvalConfig.from_dict(data)
    assert cfg.diagnostics.thresholds == Thresholds()  # the documented defaults are the real ones
    assert set(data) == set(EvalConfig.KEYS)
    assert set(data["threats"][0]) == set(ThreatSpec.KEYS)
    assert set().union(*(a.keys() for a in data["attacks"] if isinstance(a, dict))) == set(AttackSpec.KEYS)
    assert set(data["noise"][0]) == set(NoiseSpec.KEYS)
    assert set(data["transfer"]) == set(TransferSpec.KEYS)
    assert set(data["diagnostics"]) == set(DiagnosticsSpec.KEYS)
    assert set(data["diagnostics"]["sanity"]) == set(SanitySpec.KEYS)
    assert set(data["diagnostics"]["thresholds"]) == {f.name for f in dataclasses.fields(Thresholds)}


def test_top_level_bpda_layers_null_means_auto() -> None:
    """``bpda_layers: null`` at the top level: before, None got through and `evaluate` stopped with a raw TypeError
    traceback in check_bpda_specs ('NoneType' object is not iterable); null means the default, as for every key
    with a default."""
    cfg = EvalConfig.from_dict(base(bpda_layers=None))
    assert cfg.bpda_layers == ("auto",) and cfg == EvalConfig.from_dict(base())
    assert EvalConfig.from_dict(base(attacks=[{"attack": "bpda", "params": {"inner": "pgd"}, "bpda_layers": None}])
                                ).attacks[0].bpda_layers is None  # on an attack, null still means the top level's
