"""A parameter an attack gained after records began storing settings (:data:`attacks.settings.LATER_DEFAULTS`:
APGD's ODI start, ``odi_steps`` 0 and ``odi_step`` 1, session 49) is no difference where a finished unit's stored
settings lack it and this version sets it to the value that does what the attack did before: a partial run written
before resumes (before, every APGD unit of such a record made it stale: refused, or set aside and run again)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from eval_helpers import make_record, make_result
from kwta_robust.evaluate import evaluate
from kwta_robust.record_diff import record_differences
from kwta_robust.resume import settings_change
from test_evaluate import config, linear_problem

APGD = {"loss": "ce", "steps": 3, "restarts": 1, "rho": 0.75, "initial_step": 2.0}
NEW = {**APGD, "odi_steps": 0, "odi_step": 1.0}


def _record(settings: dict):
    record = make_record(n=4)
    record.results = [make_result("apgd-ce", [1, 0, 1, 1])]
    record.results[0].settings = settings
    return record


def test_settings_without_the_added_parameters_at_their_neutral_values_are_the_same() -> None:
    assert settings_change(_record(dict(APGD)), {"apgd-ce": NEW}) is None
    nested = {"surrogate": "smooth", "inner": [{"attack": "apgd-ce", **APGD}, {"attack": "apgd-ce", **APGD}]}
    expected = {"surrogate": "smooth", "inner": [{"attack": "apgd-ce", **NEW}, {"attack": "apgd-ce", **NEW}]}
    assert settings_change(_record(nested), {"apgd-ce": expected}) is None  # a BPDA stage's inner attack too


def test_other_values_of_an_added_parameter_or_another_missing_key_still_differ() -> None:
    assert settings_change(_record(dict(APGD)), {"apgd-ce": {**NEW, "odi_steps": 2}}) == (
        "other attack settings (apgd-ce: odi_steps (none) → 2; this version's attack defaults changed)")
    assert settings_change(_record(dict(APGD)), {"apgd-ce": {**NEW, "odi_step": 0.5}}) == (
        "other attack settings (apgd-ce: odi_step (none) → 0.5; this version's attack defaults changed)")
    assert settings_change(_record(dict(APGD)), {"apgd-ce": {**NEW, "momentum": 0.9}}) == (
        "other attack settings (apgd-ce: momentum (none) → 0.9; this version's attack defaults changed)")
    lost = {k: v for k, v in NEW.items() if k != "odi_steps"}  # the record holds it, this version lacks it
    assert settings_change(_record(copy.deepcopy(NEW)), {"apgd-ce": lost}) is not None


def test_a_record_written_before_the_odi_parameters_resumes(tmp_path: Path) -> None:
    model, data = linear_problem(24)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.05, 0.1]}],
                 attacks=[{"attack": "apgd-ce", "params": {"steps": 3}}], diagnostics={"enabled": False})
    out = tmp_path / "rec.json"
    first = evaluate(model, data, cfg, {}, out_path=out, progress=False)
    assert first.results[0].settings["odi_steps"] == 0 and first.results[0].settings["odi_step"] == 1.0
    stored = json.loads(out.read_text())
    for result in stored["results"]:  # as session 48 wrote it
        del result["settings"]["odi_steps"], result["settings"]["odi_step"]
    out.write_text(json.dumps(stored))
    again = evaluate(model, data, cfg, {}, out_path=out, progress=False)  # before: refused, other attack settings
    assert len(again.provenance["resumed_at"]) == 1
    assert all("odi_steps" not in r.settings for r in again.results)  # the kept units, as stored
    assert [r.flags for r in again.results] == [r.flags for r in first.results]


def test_diff_reads_the_added_parameters_as_the_resume_check_does() -> None:
    old, new = _record(dict(APGD)), _record(copy.deepcopy(NEW))
    assert record_differences(old.to_dict(), new.to_dict()) == []  # before: odi_steps / odi_step only in the second
    assert record_differences(new.to_dict(), old.to_dict()) == []
    other = _record({**NEW, "odi_steps": 2})
    assert record_differences(old.to_dict(), other.to_dict()) == ["results[0].settings.odi_steps: only in the second"]
