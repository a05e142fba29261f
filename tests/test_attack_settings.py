"""Every attack's effective hyperparameters (attacks.settings, AttackResult.settings): the defaults that ran are in
the record beside the params the config gave, inner attacks nested, never a guessed value; JSON-safe and read back
as written; records written before them still load."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from attacks.base import REGISTRY, attack_info, create_attack, register_attack
from attacks.errors import AttackConfigError
from attacks.settings import attack_settings, json_safe
from eval_helpers import make_record, make_result
from kwta_robust.attack_plan import PlannedAttack, planned_settings
from kwta_robust.evaluate import evaluate
from kwta_robust.report import detail_table
from kwta_robust.results import EvalRecord, RecordError, load_record, save_record
from test_evaluate import config, linear_problem


def settings_of(name: str, **params: Any) -> dict[str, Any]:
    """The settings of the registered attack ``name`` built from ``params`` as the runner builds it."""
    return PlannedAttack(name, name, params).settings({}, "pgd", {})


def test_pgd_records_its_defaults_and_the_step_size_rule() -> None:
    assert settings_of("pgd", steps=10) == {"steps": 10, "step_size": "2.5*eps/steps", "restarts": 1, "loss": "ce",
                                            "random_start": True}  # the seed is the unit's, not a setting
    assert settings_of("pgd", steps=10, step_size=0.03)["step_size"] == 0.03
    assert settings_of("apgd-ce") == {"loss": "ce", "steps": 100, "restarts": 1, "rho": 0.75, "initial_step": 2.0,
                                      "odi_steps": 0, "odi_step": 1.0}
    assert settings_of("square")["p_init"] == 0.8


def test_non_dataclass_built_ins_record_their_factory_parameters() -> None:
    eot = settings_of("eot", steps=5)
    assert eot == {"steps": 5, "eot_samples": 10, "loss": "ce", "step_size": "2.5*eps/steps", "random_start": True,
                   "eot_batch_size": 4096}
    estimation = settings_of("gradient-estimation", sigma=0.01)
    assert estimation["sigma"] == 0.01 and estimation["samples_start"] == 20
    assert estimation["step_size"].startswith("2.5*eps/steps (linf)") and "_complete" not in estimation


def test_bpda_nests_every_stage_of_its_inner_attack() -> None:
    found = settings_of("bpda", inner="apgd-ce", temperature_schedule=[1.0, [0.3, 0.1]], stage_steps=[4, 6],
                        stage_params=[{}, {"rho": 0.5}])
    assert found["surrogate"] == "smooth" and found["stage_keep"] == [1.0, 1.0]
    assert found["temperatures"] == [1.0, [0.3, 0.1]]  # as temperature_schedule writes them
    drawn = settings_of("bpda", temperature_schedule=[{"log_uniform": [0.02, 0.1]}])
    assert drawn["temperatures"] == [{"log_uniform": [0.02, 0.1]}]
    assert [s["steps"] for s in found["inner"]] == [4, 6] and [s["rho"] for s in found["inner"]] == [0.75, 0.5]
    assert all(s["attack"] == "apgd-ce" and s["initial_step"] == 2.0 and "seed" not in s for s in found["inner"])
    assert "fit" not in found  # the smooth surrogate fits nothing
    learned = settings_of("bpda", surrogate="learned", inner="eot")
    assert learned["fit"]["steps"] == 300 and "temperatures" not in learned and "distill" not in learned
    assert learned["inner"] == [{"attack": "eot", **settings_of("eot")}]


def test_transfer_nests_its_inner_attack() -> None:
    source = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    planned = PlannedAttack("transfer", "transfer", {}, source="twin")
    found = planned.settings({"twin": source}, "pgd", {"steps": 3})
    assert found == {"inner": {"attack": "pgd", **settings_of("pgd", steps=3)}}


def test_a_third_party_wrapper_says_its_settings_are_incomplete() -> None:
    found = settings_of("hopskipjump", steps=8)
    assert found["steps"] == 8 and found["max_queries"] == "no cap"
    assert found["_complete"] is False and "foolbox's own defaults" in found["_note"]


@dataclass
class _PluginAttack:
    """A researcher's dataclass attack (the tests register it)."""

    steps: int = 7
    scale: float = 0.5
    seed: int = 0
    name: ClassVar[str] = "plugin-dc"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Any) -> torch.Tensor:
        return x


class _OpaqueAttack:
    """A plug-in passing everything on to a library behind ``**options``: its defaults are not knowable."""

    name = "plugin-opaque"

    def __init__(self, seed: int = 0, rounds: int = 3, **options: Any) -> None:
        self.options = options

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Any) -> torch.Tensor:
        return x


@pytest.fixture
def plugins(request: pytest.FixtureRequest) -> None:
    for name, factory in (("plugin-dc", _PluginAttack), ("plugin-opaque", _OpaqueAttack)):
        register_attack(name)(factory)
        request.addfinalizer(lambda name=name: REGISTRY.unregister(name))


def test_plugin_attacks_record_what_is_knowable(plugins: None) -> None:
    assert settings_of("plugin-dc", steps=2) == {"steps": 2, "scale": 0.5}
    opaque = settings_of("plugin-opaque", budget=9)
    assert opaque["rounds"] == 3 and opaque["budget"] == 9 and "seed" not in opaque
    assert opaque["_complete"] is False and "**options" in opaque["_note"]


def test_values_are_json_safe_and_the_same_on_every_run() -> None:
    odd = {"small": torch.tensor([1.0, 2.0]), "big": torch.zeros(3, 32, 32), "inf": float("inf"),
           "module": nn.ReLU(), "fn": torch.sign, "path": Path("a/b"), "set": {3, 1}, "tuple": (1, 2),
           "object": object(), "attack": create_attack("pgd", steps=2, seed=5)}
    safe = json_safe(odd)
    assert json.loads(json.dumps(safe)) == safe == json_safe(copy.deepcopy(odd))
    assert safe["small"] == [1.0, 2.0] and safe["big"] == "tensor float32 [3, 32, 32]" and safe["inf"] == "inf"
    assert safe["module"] == "<module ReLU>" and safe["set"] == [1, 3] and safe["object"] == "<object>"
    assert safe["attack"]["attack"] == "pgd" and safe["attack"]["steps"] == 2 and "seed" not in safe["attack"]
    assert "0x" not in json.dumps(safe)  # no memory address: equal settings, equal JSON


def test_the_runner_records_settings_that_read_back_as_written(tmp_path: Path) -> None:
    model, data = linear_problem(24)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.05]}],
                 attacks=[{"attack": "pgd", "params": {"steps": 4}},
                          {"attack": "bpda", "params": {"inner": "pgd", "temperature_schedule": [1.0, 0.3],
                                                        "stage_steps": [2, 3]}}],
                 diagnostics={"enabled": False})
    out = tmp_path / "rec.json"
    record = evaluate(model, data, cfg, {}, transfer_sources={"twin": copy.deepcopy(model)}, out_path=out,
                      progress=False)
    expected = planned_settings(cfg, 2, {"twin": model})
    assert {r.label: r.settings for r in record.results} == expected
    assert record.result("pgd", "linf", 0.05).settings["step_size"] == "2.5*eps/steps"
    assert record.result("pgd", "linf", 0.05).params == {"steps": 4}  # the config's params stay as given
    assert [s["steps"] for s in record.result("bpda", "linf", 0.05).settings["inner"]] == [2, 3]
    assert load_record(out).results == record.results  # through the JSON file and back


def test_a_record_written_before_settings_loads_and_renders(tmp_path: Path) -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 1], params={"steps": 10})])
    data = record.to_dict()
    for r in data["results"]:
        del r["settings"]  # as an older version wrote it
    old = EvalRecord.from_dict(data)
    assert old.results[0].settings is None and old.results[0].params == {"steps": 10}
    assert detail_table(old).rows
    save_record(old, tmp_path / "old.json")
    assert load_record(tmp_path / "old.json").results[0].settings is None


def test_settings_that_are_not_an_object_are_a_record_error() -> None:
    data = make_record([make_result("pgd", [1, 0])]).to_dict()
    data["results"][0]["settings"] = [1, 2]
    with pytest.raises(RecordError, match=r"^bad.json: results\[0\].settings must be a JSON object, got list$"):
        EvalRecord.from_dict(data, source="bad.json")


def test_attack_settings_of_a_built_attack_matches_the_plan() -> None:
    attack = create_attack("pgd", steps=3, seed=11)  # another seed: the same settings
    assert attack_settings(attack, {"steps": 3}, attack_info("pgd").factory) == settings_of("pgd", steps=3)


class _SelfDescribing:
    """A plug-in attack describing its own settings, wrongly: raising, or returning no mapping."""

    name = "plugin-describes"

    def __init__(self, returns: str = "raise", seed: int = 0) -> None:
        self.returns = returns

    def attack_settings(self) -> Any:
        if self.returns == "raise":
            raise KeyError("budget")
        return ["steps", 3]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Any) -> torch.Tensor:
        return x


@pytest.mark.parametrize(("returns", "message"), [
    ("raise", r"^attack 'plugin-describes': its attack_settings\(\) raised KeyError: 'budget'; fix it"),
    ("list", r"^attack 'plugin-describes': its attack_settings\(\) returned list, expected a mapping")])
def test_a_plugins_failing_attack_settings_is_one_line_before_any_work(
        request: pytest.FixtureRequest, returns: str, message: str) -> None:
    register_attack("plugin-describes")(_SelfDescribing)
    request.addfinalizer(lambda: REGISTRY.unregister("plugin-describes"))
    model, data = linear_problem(8)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.05]}],
                 attacks=[{"attack": "plugin-describes", "params": {"returns": returns}}],
                 diagnostics={"enabled": False})
    with pytest.raises(AttackConfigError, match=message) as caught:
        evaluate(model, data, cfg, {}, progress=False)
    assert "\n" not in str(caught.value)


@dataclass
class _Chained:
    """A plug-in attack holding another attack, which may hold it back (a fallback chain)."""

    fallback: Any = None
    seed: int = 0
    name: ClassVar[str] = "chained"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Any) -> torch.Tensor:
        return x


def test_attacks_that_hold_each_other_end_in_a_marker_not_a_recursion_error() -> None:
    one, other = _Chained(), _Chained()
    one.fallback, other.fallback = other, one
    found = attack_settings(one)
    text = json.dumps(found)
    assert text == json.dumps(attack_settings(one)) and text.endswith('"<...>"' + "}" * text.count("{"))
    assert found["fallback"]["attack"] == "chained" and "seed" not in found["fallback"]


def test_numpy_arrays_are_recorded_as_tensors_are() -> None:
    safe = json_safe({"small": np.array([0.5, 2.0]), "big": np.zeros((100, 100), dtype=np.float32),
                      "scalar": np.float32(0.5), "count": np.int64(3)})
    assert safe == {"small": [0.5, 2.0], "big": "array float32 [100, 100]", "scalar": 0.5, "count": 3}


def test_huge_values_are_recorded_by_their_size_not_copied_into_every_unit() -> None:
    found = attack_settings(_Chained(fallback={"weights": [0.5] * 10**6, "mask": torch.ones(1000, 1000)}))
    assert found == {"fallback": {"weights": "<list of 1000000 items>", "mask": "tensor float32 [1000, 1000]"}}
    assert json_safe(list(range(1000))) == list(range(1000))  # a long stage list is kept


def test_a_partial_records_the_arguments_it_binds() -> None:
    smoothed = functools.partial(torch.nn.functional.cross_entropy, label_smoothing=0.1)
    assert json_safe(smoothed) == "partial(torch.nn.functional.cross_entropy, label_smoothing=0.1)"
    assert json_safe(functools.partial(max, 3)) != json_safe(functools.partial(max, 4))  # another setting shows


@pytest.mark.parametrize(("name", "key", "classes", "runs"), [
    ("apgd-t", "n_target_classes", 5, 4), ("apgd-t", "n_target_classes", 100, 9),
    ("fab-t", "n_target_classes", 3, 2), ("deepfool", "candidates", 4, 4), ("deepfool", "candidates", 100, 10)])
def test_a_count_the_attack_caps_by_the_classes_is_recorded_as_it_runs(
        name: str, key: str, classes: int, runs: int) -> None:
    """apgd-t and fab-t run at most C - 1 targets, DeepFool at most C candidates (their code's min): a protocol
    table of a 5-class data set must not claim AutoAttack's 9 targets."""
    assert PlannedAttack(name, name, {}).settings({}, "pgd", {}, num_classes=classes)[key] == runs
    assert settings_of(name)[key] in (9, 10)  # the class count unknown: the configured value


def test_class_caps_reach_inner_attacks_and_the_runner_applies_them() -> None:
    params = {"inner": "apgd-t", "temperature_schedule": [1.0, 0.1], "stage_steps": [2, 3]}
    bpda = PlannedAttack("b", "bpda", params).settings({}, "pgd", {}, 6)
    assert [stage["n_target_classes"] for stage in bpda["inner"]] == [5, 5]
    transfer = PlannedAttack("transfer", "transfer", {}, source="twin").settings(
        {"twin": nn.Linear(2, 2)}, "fab-t", {}, num_classes=4)
    assert transfer["inner"]["n_target_classes"] == 3
    model, data = linear_problem(8)  # two classes
    cfg = config(threats=[{"norm": "l2", "epsilons": [0.1]}], attacks=[{"attack": "deepfool", "params": {}}],
                 diagnostics={"enabled": False})
    assert evaluate(model, data, cfg, {}, progress=False).results[0].settings["candidates"] == 2


def test_untargeted_fab_records_no_target_count() -> None:
    assert "n_target_classes" not in settings_of("fab") and settings_of("fab")["targeted"] is False
    assert settings_of("fab-t", n_target_classes=3)["n_target_classes"] == 3


def test_gradient_estimations_rules_say_what_its_code_runs() -> None:
    """The recorded rule of each ``None`` default is what the attack computes: on CPU the forward batch is capped by
    ``query_batch_size`` too; alternatives are joined by "or", not by the comma that separates settings."""
    small = create_attack("gradient-estimation", query_batch_size=100)
    assert small.forward_batch(torch.device("cpu")) == 100
    found = settings_of("gradient-estimation", query_batch_size=100)
    assert found["forward_batch_size"] == "min(256, query_batch_size) on CPU or query_batch_size elsewhere"
    assert found["sigma"] == "eps (linf) or eps/sqrt(D) (l2)"
    for rule in type(small).setting_rules.values():  # a comma only inside parentheses, as in min(a, b)
        depth = 0
        for ch in rule:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            assert ch != "," or depth > 0, rule
