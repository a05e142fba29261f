"""The plan a dry run prints is what the run then does: per model and attack label the same kind, threat points,
effective settings and BPDA layers as the records the real run writes (``table --protocol`` of them), for a
``compare`` with BPDA, transfer attacks and a BPDA sanity attack on a kWTA model and its ReLU twin, for a model with a
top-k gate the package did not build, and, for the shipped configs, the settings ``planned_settings`` gives."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import Tensor

from attacks.base import NORMS, REGISTRY, AttackInfo, register_attack
from attacks.errors import RegistryError
from attacks.suites import get_suite
from kwta_robust.attack_plan import planned_settings
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig, load_config
from kwta_robust.dry_run import NO_LAYER as PLANNED_NO_LAYER
from kwta_robust.dry_run import dry_run_compare, dry_run_one
from kwta_robust.errors import ConfigError
from kwta_robust.loading import load_model
from kwta_robust.protocol import NO_LAYER
from kwta_robust.results import load_record
from test_cli_bpda_layers import make_gated_mlp
from test_dry_run import files, write_checkpoint, write_config

SANITY_BPDA = {"enabled": True, "gradient_batch": 12,
               "sanity": {"norm": "linf", "eps": 1.0, "attack": "bpda",
                          "params": {"surrogate": "identity", "inner": "pgd", "inner_params": {"steps": 2}}}}
ROOT = Path(__file__).resolve().parents[1]


def cli_json(argv: list[str], capsys: pytest.CaptureFixture) -> dict:
    """The JSON table a command prints (exit status 0)."""
    rc = main([*argv, "--format", "json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def rows(table: dict) -> dict[tuple[str, str], dict]:
    """A plan's or a protocol's rows by (model, label), with the columns both tables have."""
    columns = ("attack", "kind", "threats", "seed", "settings")
    return {(r["model"], r["label"]): {c: r[c] for c in columns} for r in table["rows"]}


def recorded(records: dict[str, Path]) -> dict[tuple[str, str], tuple[dict | None, dict | None]]:
    """Per (model, label) the settings and BPDA layers the run's records hold (every unit of a label alike)."""
    found: dict[tuple[str, str], set[str]] = {}
    for model, path in records.items():
        record = load_record(path)
        for r in [*record.results, *record.sanity]:
            found.setdefault((model, r.label), set()).add(json.dumps([r.settings, r.bpda_layers], sort_keys=True))
    assert all(len(v) == 1 for v in found.values())
    return {k: tuple(json.loads(next(iter(v)))) for k, v in found.items()}


def planned(plan) -> dict[tuple[str, str], tuple[dict | None, dict | None]]:
    return {(m.label, u.label): (u.settings, u.bpda_layers) for m in plan.models for u in m.units}


def test_compare_plan_is_what_the_run_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    kwta, relu = write_checkpoint(tmp_path / "kwta.pt"), write_checkpoint(tmp_path / "relu.pt", activation="relu")
    cfg = write_config(tmp_path / "c.yaml", diagnostics=SANITY_BPDA, transfer={"attack": "pgd", "params": {"steps": 2}})
    argv = ["compare", str(kwta), str(relu), "--config", str(cfg), "--out-dir", "cmp"]
    before = files(tmp_path)
    dry = cli_json([*argv, "--dry-run"], capsys)
    models = [load_model(str(p), torch.device("cpu")) for p in (kwta, relu)]
    api = dry_run_compare(models, load_config(cfg), tmp_path / "cmp")
    assert files(tmp_path) == before
    assert main([*argv, "--no-progress"]) == 0
    capsys.readouterr()
    records = {"kwta": tmp_path / "cmp" / "kwta.json", "relu": tmp_path / "cmp" / "relu.json"}
    protocol = cli_json(["table", "--protocol", *map(str, records.values())], capsys)

    expected = rows(protocol)
    assert sorted(expected) == [(m, label) for m in ("kwta", "relu")
                                for label in ("bpda", "noise numenta", "pgd", "sanity-bpda", "transfer")]
    assert expected["relu", "noise numenta"]["settings"].startswith("levels [0, 0.25], draws 1, value 1, seed ")
    plan = rows(dry)
    for row in plan.values():  # a BPDA attack on no layer: "acts ... will run" in the plan, "acted ... ran" after
        row["settings"] = row["settings"].replace(PLANNED_NO_LAYER, NO_LAYER)
    assert plan == expected
    assert expected["relu", "bpda"]["settings"].startswith(NO_LAYER)  # the ReLU twin: no gate to act on

    found = recorded(records)
    assert planned(api) == found  # the settings as data, and the layers each BPDA attack acted on
    assert found["kwta", "bpda"][1] == found["kwta", "sanity-bpda"][1] == {"net.2": "native"}
    assert found["relu", "bpda"][1] == {} and found["kwta", "transfer"][0]["inner"]["steps"] == 2
    layers = [n for n in dry["notes"] if " acts on: " in n]
    assert layers == ["kwta: bpda acts on: net.2 (native)", "kwta: sanity-bpda acts on: net.2 (native)",
                      "relu: bpda acts on: no layer, so only its first stage's inner attack will run, unchanged",
                      "relu: sanity-bpda acts on: no layer, so only its first stage's inner attack will run, unchanged"]


def test_a_foreign_gate_is_the_planned_bpda_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    """A top-k gate the package did not build (a factory's own module) is found by the layer probe and listed as
    what BPDA and the BPDA sanity attack act on, as the record then says."""
    monkeypatch.chdir(tmp_path)
    torch.save(make_gated_mlp().state_dict(), tmp_path / "w.pt")
    cfg = write_config(tmp_path / "c.yaml", diagnostics=SANITY_BPDA)
    argv = ["evaluate", "--model-factory", "test_cli_bpda_layers:make_gated_mlp", "--weights", str(tmp_path / "w.pt"),
            "--config", str(cfg), "--out", "r.json"]
    dry = cli_json([*argv, "--dry-run"], capsys)
    assert "layer probe (12 inputs, 4 leaf modules): 2 (Top8): top-k gate (dense, k=8/32)" in dry["notes"]
    assert [n for n in dry["notes"] if " acts on: " in n] == ["bpda acts on: 2 (wrapped gate/dense)",
                                                               "sanity-bpda acts on: 2 (wrapped gate/dense)"]
    api = dry_run_one(load_config(cfg), model_factory="test_cli_bpda_layers:make_gated_mlp",
                      weights=str(tmp_path / "w.pt"), out=tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()
    assert main([*argv, "--no-progress"]) == 0
    capsys.readouterr()
    assert planned(api) == recorded({"w": tmp_path / "r.json"})
    assert rows(dry) == rows(cli_json(["table", "--protocol", "r.json"], capsys))


SUITE = {"dataset": "mnist5k", "threats": [{"norm": "linf", "epsilons": [0.1]}, {"norm": "l2", "epsilons": [1.0]}],
         "diagnostics": {"enabled": True}}


@pytest.mark.parametrize("name", ["quick", "quickstart", "mnist5k-full", "study_xiao_tramer", "standard",
                                  "kwta-adaptive"])
def test_shipped_configs_plan_their_planned_settings(name: str, tmp_path: Path) -> None:
    """The expensive suites too: every label the run plans (``planned_settings``, what the records keep and the
    resume check compares) is in the plan with those settings, and every BPDA attack acts on the kWTA layer."""
    if name in ("standard", "kwta-adaptive"):
        cfg = EvalConfig.from_dict({**SUITE, "suite": name})
    else:
        cfg = load_config(ROOT / "eval_configs" / f"{name}.yaml")
    cfg = cfg.with_overrides(n_examples=8, batch_size=8, device="cpu")
    kwta, relu = (load_model(str(write_checkpoint(tmp_path / f"{n}.pt", activation=a)), torch.device("cpu"))
                  for n, a in (("kwta", None), ("relu", "relu")))
    plan = dry_run_compare([kwta, relu], cfg, tmp_path / "cmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kwta.pt", "relu.pt"]  # nothing written
    for m, source in zip(plan.models, (relu, kwta)):
        expected = planned_settings(cfg, 10, {source.label: source.model})
        assert {u.label: u.settings for u in m.units} == expected
        assert all(u.bpda_layers == ({"net.2": "native"} if m.label == "kwta" else {}) for u in m.units
                   if u.attack == "bpda")
    assert any(u.attack == "bpda" for u in plan.models[0].units) == (name not in ("quick", "standard"))


@pytest.mark.parametrize("where", ["attacks", "diagnostics.sanity", "transfer"])
def test_an_attack_the_classes_are_too_few_for_is_refused_before_any_work(where: str) -> None:
    """APGD-T needs 4 classes, APGD-DLR 3; the run refuses them with the settings it plans (before its clean pass;
    a cascade calls an attack only once samples reach it), wherever the attack sits."""
    data: dict = {"dataset": "mnist5k", "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": ["pgd"]}
    dlr = {"attack": "apgd-dlr", "params": {"steps": 2}}
    if where == "attacks":
        data["attacks"] = ["pgd", {"attack": "bpda", "params": {"inner": "apgd-t"}}]
    elif where == "diagnostics.sanity":
        data["diagnostics"] = {"enabled": True, "sanity": {"norm": "linf", "eps": 1.0, **dlr}}
    else:
        data["transfer"] = dlr
    cfg, sources = EvalConfig.from_dict(data), {"relu": torch.nn.Identity()}
    assert planned_settings(cfg, 4, sources)  # enough classes for both
    needs = ("'apgd-t' needs a model with at least 4" if where == "attacks" else
             "'apgd-dlr' needs a model with at least 3")
    with pytest.raises(ConfigError, match=re.escape(needs)) as caught:
        planned_settings(cfg, 3 if where == "attacks" else 2, sources)
    lead = {"attacks": "attacks: 'bpda' with inner 'apgd-t': attack",
            "diagnostics.sanity": "diagnostics.sanity: attack", "transfer": "transfer: attack"}
    assert str(caught.value).startswith(lead[where])
    if where == "transfer":  # no source, no transfer attack
        assert planned_settings(cfg, 2, {})


def five_class_attack(seed: int = 0) -> Callable[..., Tensor]:
    """A plug-in's factory: the config check builds it (an attack must come back), the run refuses the attack before
    calling it."""
    return lambda model, x, y, threat: x


def test_a_plugin_attack_declares_the_classes_it_needs() -> None:
    """A plug-in registers ``min_classes`` with its reason, as APGD-T and APGD-DLR do: a run refuses it before any
    work on a model with fewer classes, in the same words; a shipped suite leaves out APGD-T by the same field."""
    info = AttackInfo("five-class", five_class_attack, NORMS, "white-box", min_classes=5,
                      class_reason="its loss reads the 5th-largest logit")
    with REGISTRY.temporarily("five-class", info):
        cfg = EvalConfig.from_dict({"dataset": "mnist5k", "threats": [{"norm": "linf", "epsilons": [0.1]}],
                                    "attacks": ["pgd", "five-class"]})
        assert set(planned_settings(cfg, 5, {})) == {"pgd", "five-class"}
        with pytest.raises(ConfigError, match=re.escape(
                "attacks: 'five-class': attack 'five-class' needs a model with at least 5 classes (its loss reads "
                "the 5th-largest logit); this model has 4")):
            planned_settings(cfg, 4, {})
    assert [e["attack"] for e in get_suite("standard", 4)] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [e["attack"] for e in get_suite("standard", 3)] == ["apgd-ce", "fab-t", "square"]  # APGD-T needs 4


@pytest.mark.parametrize("min_classes, reason", [(1, ""), (True, ""), (3, ""), (3.0, "why")])
def test_min_classes_must_be_an_int_of_at_least_2_with_its_reason(min_classes: object, reason: str) -> None:
    with pytest.raises(RegistryError, match="has min_classes .*; use an int >= 2 \\(above 2 with its class_reason"):
        register_attack("bad-classes", min_classes=min_classes, class_reason=reason)  # type: ignore[arg-type]
    assert "bad-classes" not in REGISTRY.names()
