"""The one config toolkit: eval, train, pruning and sweep configs name a bad key, a wrong type, a value out of range
and an unknown name in the same words; the dataclass fields are the keys; the recipe tables implement exactly the
names a training config allows."""

from __future__ import annotations

import dataclasses

import pytest

from kwta_robust.config import EvalConfig
from kwta_robust.configio import keys
from kwta_robust.errors import ConfigError
from kwta_robust.sparsity import PruningConfig
from kwta_robust.sweep.config import ExecutorSpec
from kwta_robust.sweep.grid import Grid
from kwta_robust.training import AUGMENTATIONS, METHODS, OPTIMIZERS, SCHEDULES, TrainConfig
from kwta_robust.training.config import AUGMENTATION_NAMES, METHOD_NAMES, OPTIMIZER_NAMES, SCHEDULE_NAMES

EVAL = {"dataset": "digits", "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": ["fgsm"]}


def message(build) -> str:
    with pytest.raises(ConfigError) as info:
        build()
    text = str(info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("build, expected", [
    (lambda: EvalConfig.from_dict({**EVAL, "sead": 1}), "config: unknown key 'sead'; valid keys: description, "),
    (lambda: TrainConfig.from_dict({"sead": 1}), "config: unknown key 'sead'; valid keys: dataset, "),
    (lambda: PruningConfig.from_dict({"method": "rigl", "sparsity": 0.5, "sead": 1}),
     "pruning: unknown key 'sead'; valid keys: method, "),
    (lambda: Grid.from_dict({"kwta_ratios": [1.0], "weight_sparsities": [0.0], "sead": 1}),
     "grid: unknown key 'sead'; valid keys: kwta_ratios, weight_sparsities, pruning_methods"),
    (lambda: EvalConfig.from_dict({**EVAL, "seed": "1"}), "seed: expected an integer, got '1'"),
    (lambda: TrainConfig.from_dict({"seed": True}), "seed: expected an integer, got True"),
    (lambda: PruningConfig.from_dict({"method": "rigl", "sparsity": 0.5, "rigl_interval": 2.5}),
     "pruning.rigl_interval: expected an integer, got 2.5"),
    (lambda: EvalConfig.from_dict({**EVAL, "seed": -1}), "seed: must be >= 0, got -1"),
    (lambda: TrainConfig.from_dict({"seed": -1}), "seed: must be >= 0, got -1"),
    (lambda: EvalConfig.from_dict({**EVAL, "mode": "x"}), "mode: unknown mode 'x'; known modes: cascade, independent"),
    (lambda: TrainConfig.from_dict({"optimizer": "x"}), "optimizer: unknown optimizer 'x'; known optimizers: sgd, "),
    (lambda: PruningConfig.from_dict({"method": "x", "sparsity": 0.5}),
     "pruning.method: unknown pruning method 'x'; known pruning methods: early-bird, "),
    (lambda: ExecutorSpec(name="x"), "executor.name: unknown executor 'x'; known executors: "),
    (lambda: EvalConfig.from_dict({**EVAL, "attacks": ["x"]}),
     "attacks[0].attack: unknown attack 'x'; known attacks: "),
    (lambda: EvalConfig.from_dict({"threats": []}), "config: missing key 'dataset' (e.g. mnist5k)"),
])
def test_one_wording(build, expected: str) -> None:
    assert message(build).startswith(expected)


def test_a_method_checks_its_own_parameters() -> None:
    assert message(lambda: PruningConfig(method="rigl", sparsity=0.5, rigl_alpha=2.0)) == \
        "pruning.rigl_alpha: must be a number in (0, 1], got 2.0"
    assert message(lambda: PruningConfig(method="early-bird", sparsity=0.5, early_bird_window=0)) == \
        "pruning.early_bird_window: must be an integer >= 1, got 0"
    assert message(lambda: PruningConfig(method="magnitude", sparsity=0.5, rigl_distribution="normal")) == \
        "pruning.rigl_distribution: must be one of uniform, erk, got 'normal'"  # a bad value never hides


def test_fields_are_the_keys_and_construction_validates() -> None:
    assert EvalConfig.KEYS == tuple(keys(EvalConfig)) and "data_file" not in EvalConfig.KEYS
    cfg = TrainConfig.from_dict({"epochs": 1})
    with pytest.raises(ConfigError, match="epochs: must be >= 0, got -1"):
        dataclasses.replace(cfg, epochs=-1)
    assert TrainConfig.from_dict({"lr": "1e-3", "adversarial": {"eps": "8/255"}}).adversarial.eps == 8 / 255


def test_recipe_tables_implement_the_config_choices() -> None:
    for table, names in ((OPTIMIZERS, OPTIMIZER_NAMES), (SCHEDULES, SCHEDULE_NAMES), (METHODS, METHOD_NAMES),
                         (AUGMENTATIONS, AUGMENTATION_NAMES)):
        assert tuple(table) == names


@pytest.mark.parametrize("build, expected", [
    (lambda: EvalConfig.from_dict({**EVAL, "diagnostics": {"budget_check": {"max_cost": float("inf")}}}),
     "diagnostics.budget_check.max_cost: expected a finite number, got inf"),
    (lambda: EvalConfig.from_dict({**EVAL, "diagnostics": {"thresholds": {"wide_margin": float("nan")}}}),
     "expected a finite number, got nan"),
    (lambda: ExecutorSpec(name="ray", gpus_per_cell=float("inf")),
     "executor.gpus_per_cell: expected a finite number, got inf"),
    (lambda: PruningConfig.from_dict({"method": "magnitude", "sparsity": 0.5, "finetune_lr": float("inf")}),
     "pruning.finetune_lr: expected a finite number, got inf"),
    (lambda: TrainConfig.from_dict({"gamma": float("inf")}), "gamma: expected a finite number, got inf"),
    (lambda: TrainConfig.from_dict({"lr": 10 ** 400}), "lr: expected a finite number, got an integer of 401 digits"),
    (lambda: TrainConfig.from_dict({"milestones": [float("inf")]}), "milestones[0]: expected a finite number"),
    (lambda: TrainConfig.from_dict({"activation": {"name": "kwta", "k_ratio": 0.5, "boost_strength": float("inf")}}),
     "activation.boost_strength: expected a finite number, got inf"),
])
def test_numbers_are_finite(build, expected: str) -> None:
    """Before, NaN passed every bound (a NaN threshold silently turned its flag off), and budget_check.max_cost: inf
    was accepted and stopped the run after its attacks with a raw ValueError traceback (cannot convert float NaN to
    integer) in plan_reruns; gpus_per_cell: inf went to Ray."""
    assert expected in message(build)


def test_a_threshold_error_names_the_threshold_and_1e_5_reads_as_written() -> None:
    """Before: 'diagnostics.thresholds: expected a number, got '1e-5'' for `output_rtol: 1e-5` (PyYAML reads it as a
    string; every other number field takes it) — neither the threshold named nor the value accepted."""
    cfg = EvalConfig.from_dict({**EVAL, "diagnostics": {"thresholds": {"output_rtol": "1e-5"}}})
    assert cfg.diagnostics.thresholds.output_rtol == 1e-5
    assert message(lambda: EvalConfig.from_dict({**EVAL, "diagnostics": {"thresholds": {"probability_atol": "x"}}})
                   ) == "diagnostics.thresholds.probability_atol: expected a number, got 'x'"
    assert message(lambda: EvalConfig.from_dict({**EVAL, "diagnostics": {"thresholds": {"wide_margin": float("nan")}}})
                   ) == "diagnostics.thresholds.wide_margin: expected a finite number, got nan"


def test_a_key_given_twice_in_a_yaml_file_is_refused(tmp_path) -> None:
    """Before, PyYAML kept the last value silently (`dataset: digits` then `dataset: mnist5k` evaluated mnist5k)."""
    from kwta_robust.configio import read_yaml

    (tmp_path / "c.yaml").write_text("dataset: digits\nthreats:\n  - norm: linf\n    epsilons: [0.1]\n"
                                     "dataset: mnist5k\n")
    assert message(lambda: read_yaml(tmp_path / "c.yaml", "--config")) == (
        f"--config: {tmp_path / 'c.yaml'} is not valid YAML (line 5): key 'dataset' is given twice (lines 1 and 5); "
        "keep one")
    (tmp_path / "m.yaml").write_text("base: &b {steps: 1, loss: ce}\nattack: {<<: *b, steps: 2}\n")  # merge keys
    assert read_yaml(tmp_path / "m.yaml", "--config")["attack"] == {"steps": 2, "loss": "ce"}


def test_merge_keys_of_nested_anchors_load_and_a_flow_mapping_key_given_twice_is_refused(tmp_path) -> None:
    """Merging an anchored mapping that itself overrides a merged key (``inner: &i {<<: *d, x: 2}``, then
    ``other: {<<: *i}``) is valid YAML: PyYAML folds the merged keys into the anchored node in place, and the check
    made while constructing read the folded node as 'key 'x' is given twice'. A key given twice in a flow mapping on
    one line (``{steps: 10, steps: 40}``) went through (the check compared line numbers)."""
    import yaml

    from kwta_robust.configio import read_yaml

    text = "defaults: &d\n  x: 1\nmodel:\n  inner: &i\n    <<: *d\n    x: 2\nother:\n  <<: *i\n"
    (tmp_path / "m.yaml").write_text(text)
    assert read_yaml(tmp_path / "m.yaml", "--config") == yaml.safe_load(text)
    (tmp_path / "f.yaml").write_text("attacks: [{attack: pgd, params: {steps: 10, steps: 40}}]\n")
    assert message(lambda: read_yaml(tmp_path / "f.yaml", "--config")) == (
        f"--config: {tmp_path / 'f.yaml'} is not valid YAML (line 1): key 'steps' is given twice (line 1); keep one")


def test_yaml_1_2_floats_are_numbers_everywhere(tmp_path) -> None:
    """PyYAML (YAML 1.1) reads ``1e-2`` as the string '1e-2': an attack's ``step_size: 1e-2`` was refused ('must be a
    finite number > 0, got '1e-2'') while number fields coerced it. Every config YAML is read with one loader whose
    float resolver also takes YAML 1.2 floats (``1e-2``, ``1E3``, ``.5e-3``, ``-2.5e+1``)."""
    from kwta_robust.configio import load_yaml_text

    path = tmp_path / "c.yaml"
    path.write_text("dataset: digits\nthreats: [{norm: linf, epsilons: [0.1]}]\n"
                    "attacks: [{attack: pgd, params: {steps: 2, step_size: 1e-2}}]\n")
    assert EvalConfig.from_yaml(path).attacks[0].params == {"steps": 2, "step_size": 0.01}
    assert load_yaml_text("[1e-2, 1E3, .5e-3, -2.5e+1, +1e2, 1.5, 7, '1e-2', 1e, e3, 1_000.5, .inf]") == [
        0.01, 1000.0, 0.0005, -25.0, 100.0, 1.5, 7, "1e-2", "1e", "e3", 1000.5, float("inf")]
    assert isinstance(load_yaml_text("x: 1e3")["x"], float)


@pytest.mark.parametrize("data, field, detail", [
    ({**EVAL, "seed": "1"}, "seed", "expected an integer, got '1'"),
    ({**EVAL, "sead": 1}, "config", "unknown key 'sead'; valid keys: " + ", ".join(keys(EvalConfig))),
    ({**EVAL, "attacks": [{"attack": "pgd", "norms": ["l3"]}]}, "attacks[0].norms[0]",
     "unknown norm 'l3'; known norms: linf, l2"),
    ({**EVAL, "attacks": [{"attack": "pgd", "params": {"seed": -1}}]}, "attacks[0].params.seed",
     "must be an integer from 0 to 2**63 - 1 (the attack's random seed; leave it out to derive one from the config's "
     "seed), got -1"),
])
def test_an_error_keeps_the_field_and_the_detail_apart(data: dict, field: str, detail: str) -> None:
    """What a caller reads to re-home an error at its own key (a sanity entry's ``norm``) without splitting text."""
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict(data)
    assert (info.value.field, info.value.detail, str(info.value)) == (field, detail, f"{field}: {detail}")


def test_a_sanity_attack_error_is_at_the_entry_s_own_key() -> None:
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_dict({**EVAL, "diagnostics": {"sanity": {"attack": "cw", "norm": "linf"}}})
    assert str(info.value).startswith("diagnostics.sanity.norm: attack 'cw'")
    assert (info.value.field, info.value.detail) == ("diagnostics.sanity.norm", str(info.value).split(": ", 1)[1])
