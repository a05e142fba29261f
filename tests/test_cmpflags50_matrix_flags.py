"""A ``compare`` record's matrix cell carries the flags an ``evaluate`` record of the same model has (README section 3).

The matrices read a compare record without its transfer attacks (:mod:`kwta_robust.matrix_transfer`), but kept the
flags its checks raised with them: ``gates-without-bpda`` counted the transfer attack as a gradient-free attack and
was a warning, so the compare cell of a kWTA model lacked the critical mark its evaluate cell has ("the numbers
agree, the critical marks don't"). Now the checks whose flags the transfer attacks change are recomputed on the
view, with the config's thresholds; the budget check's re-run flags stay as stored."""

from __future__ import annotations

import dataclasses
import json
from typing import Iterator

import pytest
import torch
import yaml
from torch import nn

import kwta_robust.git_revision as git_revision
import kwta_robust.results as results
from kwta_robust.cli import main
from kwta_robust.diagnostics import SEVERITIES
from kwta_robust.matrix import build_matrices, legend
from kwta_robust.matrix_transfer import suite_view
from kwta_robust.results import Flag, load_records
from test_grid_cell import TopKMLP

MODULE = "test_cmpflags50_matrix_flags"
#: The commit the records are written and read at: only this code's records are recomputed (matrix51), and the
#: package need not be imported from a clone.
COMMIT = "50" * 20


def make_net(k: int | None = None) -> nn.Module:
    """A top-k MLP of one's own (``k`` of 32 hidden units; the layer probe finds the gate) or its ReLU twin."""
    return TopKMLP(k)


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """compare of the top-k model with its ReLU twin, and evaluate of the top-k model: pgd only, no BPDA; written
    and read at :data:`COMMIT`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(results, "harness_revision", lambda: COMMIT)
        patch.setattr(git_revision, "git_commit", lambda root: COMMIT)
        patch.setattr(git_revision, "tracked_changes", lambda root: False)
        yield _written(tmp_path_factory)


def _written(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("cmpflags")
    config = tmp / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 8, "batch_size": 8, "device": "cpu", "seed": 0, "noise": [],
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
    }))
    for name, k in (("kwta", 4), ("relu", None)):
        torch.save(make_net(k).state_dict(), tmp / f"{name}.pt")
    assert main(["compare", f"{MODULE}:make_net={tmp / 'kwta.pt'}", f"{MODULE}:make_net={tmp / 'relu.pt'}",
                 "--factory-kwargs", 'kwta={"k": 4}', "--factory-kwargs", "relu={}", "--config", str(config),
                 "--out-dir", str(tmp / "cmp"), "--no-progress",
                 "--grid-cell", "kwta=kwta_ratio=0.125,weight_sparsity=0",
                 "--grid-cell", "relu=kwta_ratio=1,weight_sparsity=0"]) == 0
    assert main(["evaluate", "--model-factory", f"{MODULE}:make_net", "--weights", str(tmp / "kwta.pt"),
                 "--factory-kwargs", '{"k": 4}', "--config", str(config), "--out", str(tmp / "ev.json"),
                 "--no-progress", "--grid-cell", "kwta_ratio=0.125,weight_sparsity=0"]) == 0
    compared = load_records([tmp / "cmp" / "kwta.json", tmp / "cmp" / "relu.json"])
    assert compared[0].provenance["versions"]["kwta_robust_git"] == COMMIT
    return {"compared": compared, "evaluated": load_records([tmp / "ev.json"])[0], "dir": tmp}


def _kwta_flags(recs: list) -> list[tuple]:
    """Per matrix, the critical marks of the top-k cell."""
    return [(m.title, m.flags[(0.125, 0.0)]) for m in build_matrices(recs)]


def test_the_compare_cell_carries_the_critical_marks_of_the_evaluate_cell(records: dict) -> None:
    kwta, relu = records["compared"]
    stored = {f.code: f.severity for f in kwta.diagnostics}
    # before misc53 a warning: the transfer attack counted as gradient-free; now the record holds evaluate's flags
    assert stored["gates-without-bpda"] == "critical"
    assert {f.code: f.severity for f in records["evaluated"].diagnostics}["gates-without-bpda"] == "critical"
    from_compare, from_evaluate = _kwta_flags([kwta, relu]), _kwta_flags([records["evaluated"], relu])
    assert from_compare == from_evaluate
    assert all("gates-without-bpda" in marks for _, marks in from_compare)
    line = next(n for n in legend(build_matrices([kwta, relu])) if n.startswith("records with transfer attacks:"))
    assert "kwta (transfer)" in line and "flags recomputed" not in line  # nothing the transfer changed
    assert "budget check's flags from re-runs" in line
    file = json.loads((records["dir"] / "cmp" / "kwta.json").read_text())
    assert {f["code"]: f["severity"] for f in file["diagnostics"]}["gates-without-bpda"] == "critical"


def test_the_view_holds_the_evaluate_records_flags(records: dict) -> None:
    kwta, evaluated = records["compared"][0], records["evaluated"]

    def codes(flags: list[Flag]) -> list[tuple[str, str]]:
        return sorted((f.code, f.severity) for f in flags if f.evidence.get("source") != "rerun")

    assert codes(suite_view(kwta).diagnostics) == codes(evaluated.diagnostics)
    assert codes(kwta.diagnostics) == codes(evaluated.diagnostics)  # misc53: the record itself holds them too


def test_budget_rerun_flags_and_unaffected_flags_stay_as_stored(records: dict) -> None:
    from kwta_robust.matrix_transfer import suite_flags  # new: the flags of the view and the codes recomputed

    kwta = records["compared"][0]
    rerun = Flag("budget-still-lowering", "warning", "re-run", {"source": "rerun", "n": 8})
    other = Flag("grid-cell-sparsity", "warning", "declared", {})
    # its pgd read as square (gradient-free): gates-without-bpda says the worst case rests on square and the transfer
    # (crafted on another model) alone, and on the view on square alone, so that code is recomputed (before misc53
    # the transfer counted as gradient-free and changed its severity on the record as the fixture wrote it)
    results = [r if r.source is not None else dataclasses.replace(r, attack="square", kind="black-box")
               for r in kwta.results]
    edited = dataclasses.replace(kwta, results=results, diagnostics=[rerun, *kwta.diagnostics, other])
    flags, changed = suite_flags(edited, suite_view(edited))
    assert rerun in flags and other in flags
    assert "gates-without-bpda" in changed and "budget-still-lowering" not in changed
    assert sorted(repr(f) for f in flags if f.code not in changed) == \
        sorted(repr(f) for f in edited.diagnostics if f.code not in changed)
    assert [f.severity for f in flags] == sorted((f.severity for f in flags), key=SEVERITIES.index)

    config = {**kwta.config, "diagnostics": {**kwta.config["diagnostics"], "enabled": False}}
    off = dataclasses.replace(edited, config=config)  # no diagnostics ran: nothing to recompute
    assert suite_flags(off, suite_view(off)) == (off.diagnostics, [])
