"""A record is resumed only where this version builds its finished units' attacks with the settings it stored
(kwta_robust.resume.differences with ``settings``): a default that changed between versions is one line naming
the attack and the first differing setting; records without settings resume as before; ``diff`` names the cause."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.attack_plan import planned_settings
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.record_diff import cause, record_differences
from kwta_robust.results import load_record
from kwta_robust.resume import StalePolicy, first_difference, stale_reason
from test_evaluate import config, linear_problem

PGD = {"steps": 10, "step_size": 0.025, "restarts": 1, "loss": "ce", "random_start": True}


def records() -> tuple:
    fresh = make_record(n=4)
    old = copy.deepcopy(fresh)
    old.results = [make_result("pgd", [1, 0, 1, 1]), make_result("fgsm", [1, 1, 1, 1], position=1)]
    old.results[0].settings = dict(PGD)
    return old, fresh


def test_a_changed_default_is_named_with_the_attack_and_the_setting() -> None:
    old, fresh = records()
    assert stale_reason(old, fresh, {"pgd": dict(PGD)}) is None  # the same settings: resumed
    assert stale_reason(old, fresh, {"pgd": {**PGD, "step_size": 0.03}}) == (
        "holds a record of other attack settings (pgd: step_size 0.025 → 0.03; this version's attack defaults "
        "changed)")
    assert "pgd: momentum (none) → 0.9" in stale_reason(old, fresh, {"pgd": {**PGD, "momentum": 0.9}})
    assert stale_reason(old, fresh) is None  # no settings to compare given: today's identity checks only


def test_units_without_settings_and_other_configs_are_not_compared() -> None:
    old, fresh = records()
    assert old.results[1].settings is None  # fgsm written before settings were stored
    assert stale_reason(old, fresh, {"pgd": dict(PGD), "fgsm": {"loss": "margin"}}) is None
    old.config_hash = "other"  # another config: that is the reason, its settings are not this config's
    assert stale_reason(old, fresh, {"pgd": {**PGD, "steps": 20}}) == "holds a record of another config"
    old.config_hash = fresh.config_hash
    old.sanity = [make_result("sanity-pgd", [0, 0, 0, 0])]
    old.sanity[0].settings = {"steps": 100}
    assert "sanity-pgd: steps 100 → 200" in stale_reason(old, fresh, {"pgd": dict(PGD), "sanity-pgd": {"steps": 200}})


def test_first_difference_walks_nested_settings() -> None:
    before = {"surrogate": "smooth", "inner": [{"steps": 2}, {"steps": 3}]}
    assert first_difference(before, copy.deepcopy(before)) is None
    assert first_difference(before, {"surrogate": "smooth", "inner": [{"steps": 2}, {"steps": 4}]}) == (
        "inner[1].steps", 3, 4)
    assert first_difference({"random_start": True}, {"random_start": 1}) == ("random_start", True, 1)
    assert first_difference({"inner": [1]}, {"inner": [1, 2]}) == ("inner", [1], [1, 2])
    other = {"log_uniform": [0.02, 0.1]}  # another shape altogether: the whole value, not its first key
    assert first_difference({"t": [{"kind": "log-uniform"}]}, {"t": [other]}) == ("t[0]", {"kind": "log-uniform"},
                                                                                  other)


def test_the_runner_refuses_a_record_of_other_settings_and_resumes_equal_ones(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, data = linear_problem(24)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.05]}], attacks=[{"attack": "pgd", "params": {"steps": 3}}],
                 diagnostics={"enabled": False})
    out = tmp_path / "rec.json"
    first = evaluate(model, data, cfg, {}, out_path=out, progress=False)
    again = evaluate(model, data, cfg, {}, out_path=out, progress=False)  # equal settings: resumed, nothing re-run
    assert len(again.provenance["resumed_at"]) == 1 and again.results == first.results

    stored = json.loads(out.read_text())
    stored["results"][0]["settings"]["step_size"] = 0.025  # as a version with another default wrote it
    out.write_text(json.dumps(stored))
    with pytest.raises(ConfigError) as refused:
        evaluate(model, data, cfg, {}, out_path=out, progress=False)
    assert str(refused.value) == (
        f"--out: {out} holds a record of other attack settings (pgd: step_size 0.025 → 2.5*eps/steps; this "
        "version's attack defaults changed); use a new --out or --no-resume")
    with caplog.at_level(logging.WARNING):
        fresh = evaluate(model, data, cfg, {}, out_path=out, progress=False, stale=StalePolicy(set_aside=True))
    assert "resumed_at" not in fresh.provenance and fresh.results[0].settings["step_size"] == "2.5*eps/steps"
    assert load_record(tmp_path / "superseded" / f"rec.{first.config_hash[:12]}.json").results[0].settings[
        "step_size"] == 0.025

    del stored["results"][0]["settings"]  # a record written before settings were stored: resumed as before
    out.write_text(json.dumps(stored))
    older = evaluate(model, data, cfg, {}, out_path=out, progress=False)
    assert older.provenance["resumed_at"] and older.results[0].settings is None


def test_diff_names_differing_settings_and_their_cause() -> None:
    old, _ = records()
    new = copy.deepcopy(old)
    new.results[0].settings["step_size"] = 0.03
    found = record_differences(old.to_dict(), new.to_dict())
    assert found == ["results[0].settings.step_size: 0.025 != 0.03"]
    assert cause(found[0]) == "the attack ran with other effective settings: another version's defaults"
    assert cause("provenance.resumed_threads[1]: 1 != 2").startswith("resumed with another torch thread count")


def test_diff_of_a_record_without_settings_says_so() -> None:
    old, _ = records()
    found = record_differences(old.to_dict(), {**old.to_dict(), "results": [
        {k: v for k, v in r.items() if k != "settings"} for r in old.to_dict()["results"]]})
    assert found == ["results[0].settings: only in the first", "results[1].settings: only in the first"]
    assert cause(found[0]) == "one record was written before attack settings were stored: compare their params"


def test_an_attack_may_not_take_the_sanity_attacks_label() -> None:
    sanity = {"enabled": True, "sanity": {"attack": "pgd", "params": {"steps": 5, "step_size": 0.05}}}
    attacks = [{"attack": "pgd", "label": "sanity-pgd", "params": {"steps": 3}}]
    with pytest.raises(ConfigError, match=r"^attacks: label 'sanity-pgd' is the sanity attack's \(diagnostics"):
        config(attacks=attacks, diagnostics=sanity)
    cfg = config(attacks=attacks, diagnostics={**sanity, "enabled": False})  # no sanity attack runs: no clash
    assert planned_settings(cfg, 2, {})["sanity-pgd"]["steps"] == 3  # its own settings, not the sanity attack's


def test_diff_of_a_resumed_older_record_says_its_units_predate_settings() -> None:
    old, _ = records()
    new = copy.deepcopy(old)
    old.results[0].settings = None  # kept by a resumed run from a record written before settings: saved as null
    found = record_differences(old.to_dict(), new.to_dict())
    assert len(found) == 1 and found[0].startswith("results[0].settings: None != {'steps': 10,")
    assert cause(found[0]) == "one record was written before attack settings were stored: compare their params"
    assert cause(found[0].replace("None != ", "{} != ")).startswith("the attack ran with other effective settings")
