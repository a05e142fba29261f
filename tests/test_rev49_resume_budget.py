"""A record whose every unit is finished but whose budget check is not (a run stopped while the check re-ran its
attacks: status partial, no diagnostics yet) computes attacks when resumed — the budget check's re-runs, whose
numbers the record keeps (``drop_lower_bound``) — so a resume under another commit still warns, and does not say
that no attack is re-run (session 49's review of ``note_resume(computes=...)``; a finished record with its
check's flags: ``test_msgs49_messages``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.api import evaluate_model

OTHER_COMMIT = "0" * 40
CONFIG = {"dataset": "toy", "n_examples": 6, "batch_size": 6, "seed": 1,
          "threats": [{"norm": "linf", "epsilons": [0.01]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
          "diagnostics": {"enabled": True}}


def _model_and_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _edit(path: Path, **fields: object) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(fields)
    data["provenance"].setdefault("versions", {})["kwta_robust_git"] = OTHER_COMMIT
    path.write_text(json.dumps(data), encoding="utf-8")
    return data


def test_a_resume_that_reruns_the_budget_check_warns_of_another_commit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kwta_robust.results.harness_revision", lambda: "a" * 40)  # a git clone's, wherever run
    model, x, y = _model_and_data()
    out = tmp_path / "rec.json"
    evaluate_model(model, CONFIG, x, y, out_path=out, threads=1)
    finished = json.loads(out.read_text(encoding="utf-8"))
    assert [f["evidence"].get("source") for f in finished["diagnostics"]].count("rerun") == 1  # the check re-ran pgd
    _edit(out, diagnostics=[], status="partial")  # stopped during the budget check: its units all kept
    with caplog.at_level(logging.INFO, logger="kwta_robust"):
        evaluate_model(model, CONFIG, x, y, out_path=out, threads=1)
    assert f"its finished units ran kwta-robust commit {OTHER_COMMIT}" in caplog.text
    assert "so no attack is re-run" not in caplog.text
    rerun = [f for f in json.loads(out.read_text(encoding="utf-8"))["diagnostics"]
             if f["evidence"].get("source") == "rerun"]
    assert len(rerun) == 1  # the budget check ran again, its attack with it

