"""A record written before APGD's ODI start existed (settings without ``odi_steps`` / ``odi_step``) ran the attack as
this version does at their defaults (0 steps: the start unchanged), so it resumes; other values are a difference."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from eval_helpers import make_record, make_result
from kwta_robust.comparability import settings_differences
from kwta_robust.evaluate import evaluate
from kwta_robust.resume import settings_change
from test_evaluate import config, linear_problem

APGD = {"loss": "ce", "steps": 3, "restarts": 1, "rho": 0.75, "initial_step": 2.0}
ODI = {"odi_steps": 0, "odi_step": 1.0}


def test_a_record_of_apgd_from_before_odi_resumes(tmp_path: Path) -> None:
    model, data = linear_problem(24)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.05]}],
                 attacks=[{"attack": "apgd-ce", "params": {"steps": 3}}], diagnostics={"enabled": False})
    out = tmp_path / "rec.json"
    first = evaluate(model, data, cfg, {}, out_path=out, progress=False)
    stored = json.loads(out.read_text())
    assert stored["results"][0]["settings"] == {**APGD, **ODI}
    for key in ODI:  # as the version before ODI wrote it
        del stored["results"][0]["settings"][key]
    out.write_text(json.dumps(stored))
    again = evaluate(model, data, cfg, {}, out_path=out, progress=False)  # refused before: odi_steps (none) → 0
    assert len(again.provenance["resumed_at"]) == 1
    assert [r.robust for r in again.results] == [r.robust for r in first.results]


def test_only_the_neutral_values_of_a_later_setting_are_no_difference() -> None:
    record = make_record(n=4)
    record.results = [make_result("apgd-ce", [1, 0, 1, 1]), make_result("bpda", [1, 0, 0, 1], position=1)]
    record.results[0].settings = dict(APGD)
    record.results[1].settings = {"surrogate": "smooth", "inner": [{"attack": "apgd-ce", **APGD}] * 2}
    now_bpda = {"surrogate": "smooth", "inner": [{"attack": "apgd-ce", **APGD, **ODI} for _ in range(2)]}
    assert settings_change(record, {"apgd-ce": {**APGD, **ODI}, "bpda": now_bpda}) is None
    assert settings_change(record, {"apgd-ce": {**APGD, **ODI, "odi_steps": 2}}) == (
        "other attack settings (apgd-ce: odi_steps (none) → 2; this version's attack defaults changed)")
    later = copy.deepcopy(now_bpda)
    later["inner"][1]["odi_step"] = 0.5
    assert settings_change(record, {"bpda": later}) == (
        "other attack settings (bpda: inner[1].odi_step (none) → 0.5; this version's attack defaults changed)")
    assert settings_change(record, {"apgd-ce": {**APGD, **ODI, "momentum": 0.9}}).startswith(
        "other attack settings (apgd-ce: momentum (none) → 0.9;")  # any other new key still counts


def test_tables_do_not_call_a_record_from_before_odi_one_of_other_settings() -> None:
    """The paired table's and matrices' note on differing settings (comparability.settings_differences) reads
    settings as the resume check does: it said ``apgd-ce: odi_steps 0 in b`` for records of one protocol."""
    old, new, odi = (make_record(n=4) for _ in range(3))
    for record, settings in ((old, APGD), (new, {**APGD, **ODI}), (odi, {**APGD, **ODI, "odi_steps": 2})):
        record.results = [make_result("apgd-ce", [1, 0, 1, 1])]
        record.results[0].settings = dict(settings)
    assert settings_differences([("a", old), ("b", new)]) == []
    assert settings_differences([("b", new), ("a", old)]) == []
    assert settings_differences([("a", old), ("c", odi)])[0].startswith("apgd-ce: odi_steps ")
