"""A diagnostics flag deleted from or added to a record by hand made no contradiction: ``table`` printed the record
without its ``adaptive-beats-pgd`` flag, and ``diff`` noticed only against a re-run. Where this package version and
commit wrote the record, ``table`` and ``diff`` now recompute the flags that the record's own contents raise
(``kwta_robust.record_flags``) and refuse a missing or extra one in one line naming it; older records pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eval_helpers import tiny_kwta_data
import kwta_robust.git_revision as git_revision
import kwta_robust.results as results
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.evaluate import evaluate

# the commit the record is written and read at (git need not be installed, nor the package imported from a clone)
REVISION = "0123456789abcdef0123456789abcdef01234567+dirty"
FIX = "so the record was edited; restore the diagnostics the evaluation wrote or re-run it"


@pytest.fixture
def written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, Any]]:
    """A record the runner wrote (a kWTA net, PGD at 2 steps and BPDA: BPDA beats PGD) and its parsed JSON."""
    monkeypatch.setattr(results, "harness_revision", lambda: REVISION)
    monkeypatch.setattr(git_revision, "git_commit", lambda root: REVISION[:40])
    monkeypatch.setattr(git_revision, "tracked_changes", lambda root: True)  # git status: changes (+dirty)
    model, data = tiny_kwta_data()
    cfg = EvalConfig.from_dict({"dataset": "toy", "batch_size": 24, "seed": 0,
                                "attacks": [{"attack": "pgd", "params": {"steps": 2}}, {"attack": "bpda"}],
                                "threats": [{"norm": "linf", "epsilons": [0.1, 0.2]}],
                                "diagnostics": {"gradient_batch": 8, "budget_check": {"enabled": False}}})
    path = tmp_path / "r.json"
    evaluate(model, data, cfg, {"name": "tiny"}, progress=False,
             out_path=path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert [(f["code"], f["severity"]) for f in data["diagnostics"]] == [("adaptive-beats-pgd", "critical"),
                                                                         ("sanity-not-run", "info")]
    assert data["provenance"]["versions"]["kwta_robust_git"] == REVISION
    return path, data


def _edited(path: Path, data: dict[str, Any], flags: list[dict[str, Any]], name: str) -> Path:
    out = path.with_name(name)
    out.write_text(json.dumps({**data, "diagnostics": flags}, indent=1), encoding="utf-8")
    return out


def _refused(capsys: pytest.CaptureFixture, bad: Path, good: Path, message: str) -> None:
    """``table`` and ``diff`` (either order) refuse ``bad`` in one line: ``message`` after the file's name."""
    for argv in (["table", str(bad)], ["diff", str(good), str(bad)], ["diff", str(bad), str(good)]):
        rc = main(argv)
        out, err = capsys.readouterr()
        assert (rc, out) == (2, "")
        assert err.splitlines() == [f"error: {bad}: diagnostics: {message}"]


def _passes(capsys: pytest.CaptureFixture, path: Path) -> None:
    """``table`` prints ``path`` and ``diff`` compares it (with itself: the same result)."""
    assert main(["table", str(path)]) == 0
    assert main(["diff", str(path), str(path)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("where, value", [("kwta_robust_git", "f" * 40), ("kwta_robust", "0.0.1"),
                                          ("plugins", {"attacks": {"mine": {}}})])
def test_a_deleted_flag_is_refused_naming_it(written: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture,
                                             where: str, value: Any) -> None:
    """Refused where this code wrote the record; another commit or version (whose checks may differ), or plug-ins
    the reader may lack (their registrations shape some checks): nothing compared, nothing said."""
    path, data = written
    _passes(capsys, path)
    deleted = [f for f in data["diagnostics"] if f["code"] != "adaptive-beats-pgd"]
    bad = _edited(path, data, deleted, "deleted.json")
    _refused(capsys, bad, path, "the critical flag 'adaptive-beats-pgd' is missing: this version's checks raise it "
                                f"from the record's own contents, {FIX}")
    if where == "plugins":
        data["provenance"]["plugins"] = value
    else:
        data["provenance"]["versions"][where] = value
    _passes(capsys, _edited(path, data, deleted, "older.json"))


def test_an_added_flag_is_refused_naming_it(written: tuple[Path, dict[str, Any]],
                                            capsys: pytest.CaptureFixture) -> None:
    """Refused; a reworded message (it may embed timings), a budget check's flag (from re-runs the record cannot
    repeat) and a flag of a code no built-in check raises (a sweep's grid-cell flags) are not compared."""
    path, data = written
    added = {"code": "black-box-beats-white-box", "severity": "critical", "message": "square beats pgd",
             "evidence": {}}
    bad = _edited(path, data, data["diagnostics"] + [added], "added.json")
    _refused(capsys, bad, path, "the critical flag 'black-box-beats-white-box' is not one this version's checks "
                                f"raise from the record's own contents, {FIX}")
    rerun = {"code": "budget-still-lowering", "severity": "warning", "message": "pgd at 3x its budget broke 4",
             "evidence": {"source": "rerun"}}
    grid = {"code": "grid-cell-sparsity", "severity": "warning", "message": "declared 0.5, measured 0.1"}
    _passes(capsys, _edited(path, data, [dict(f, message="reworded") for f in data["diagnostics"]] + [rerun, grid],
                            "kept.json"))


def test_a_lowered_severity_and_a_doubled_flag_are_refused(written: tuple[Path, dict[str, Any]],
                                                           capsys: pytest.CaptureFixture) -> None:
    path, data = written
    lowered = [dict(f, severity="warning") if f["code"] == "adaptive-beats-pgd" else f for f in data["diagnostics"]]
    _refused(capsys, _edited(path, data, lowered, "lowered.json"), path,
             "the critical flag 'adaptive-beats-pgd' is missing (the record holds it as warning): this version's "
             f"checks raise it from the record's own contents, {FIX}")
    doubled = data["diagnostics"] + [data["diagnostics"][0]]
    _refused(capsys, _edited(path, data, doubled, "doubled.json"), path,
             "2 critical 'adaptive-beats-pgd' flags where 1 are due: not what this version's checks raise from the "
             f"record's own contents, {FIX}")
