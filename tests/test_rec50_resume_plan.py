"""A resume that keeps every unit of a record whose budget check had not finished (status partial, no diagnostics
yet) plans the check's re-runs once: the plan that decides whether the run computes anything (the resume's info line
or warnings, ``note_resume(computes=...)``) is the one the check then runs (``budget_check.kept_plans``). Session 49
planned it twice, once for each. The flags are the uninterrupted run's; a plan made on other clean margins than the
clean pass writes (they rank survivors where no attack stored margins) is made again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import kwta_robust.budget_check as budget_check
from kwta_robust.api import evaluate_model
from tests.test_rev49_resume_budget import CONFIG, _model_and_data


def _count_plans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    planner = budget_check.plan_reruns

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return planner(*args, **kwargs)

    monkeypatch.setattr(budget_check, "plan_reruns", counted)
    return calls


def _resume_unchecked(out: Path, **fields: Any) -> None:
    """The record as a run stopped during its budget check left it: every unit kept, no diagnostics yet."""
    data = json.loads(out.read_text(encoding="utf-8"))
    data.update(diagnostics=[], status="partial", **fields)
    out.write_text(json.dumps(data), encoding="utf-8")


def _flags(out: Path) -> list[dict]:
    return json.loads(out.read_text(encoding="utf-8"))["diagnostics"]


def test_a_resume_that_keeps_every_unit_plans_the_budget_check_once(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = _model_and_data()
    out = tmp_path / "rec.json"
    evaluate_model(model, CONFIG, x, y, out_path=out, threads=1)
    whole = _flags(out)
    assert [f["evidence"].get("source") for f in whole].count("rerun") == 1  # the check re-ran pgd
    _resume_unchecked(out)
    calls = _count_plans(monkeypatch)
    evaluate_model(model, CONFIG, x, y, out_path=out, threads=1)
    assert len(calls) == 1  # session 49: 2 (the resume's computes, then the check)
    assert _flags(out) == whole

    # a record written before its clean margins: the plan read none, the clean pass writes them: planned again
    calls.clear()
    _resume_unchecked(out, clean_margins=[])
    evaluate_model(model, CONFIG, x, y, out_path=out, threads=1)
    assert len(calls) == 2
    assert _flags(out) == whole
