"""Work done once that was done twice (or per pair): each test counts the calls of the repeated step with a wrapper
and checks the output stays what it was.

* ``kwta-robust sweep`` built its matrices in ``write_outputs`` and again to print them;
* ``paired_table`` named the threat points of every record once per pair of models (quadratic in models);
* ``NoisePairedComparison.differences`` was rebuilt on every access (``interval``, ``higher``, ``lower`` ...);
* ``HarnessRevision`` read the commit from the git files twice (``commit``, then ``revision``);
* ``diff`` wrote every difference's ``path: a != b`` line for ``verdicts_summary`` to split the path back out.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

import kwta_robust.git_revision as git_revision
import kwta_robust.matrix as matrix_module
import kwta_robust.paired as paired_module
import kwta_robust.record_diff as record_diff
import kwta_robust.sweep as sweep_package
import kwta_robust.sweep.outputs as outputs_module
from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.matrix import parse_grid_cell
from kwta_robust.record_flags import HarnessRevision
from kwta_robust.report import cell_text, point_text
from kwta_robust.results import EvalRecord, save_record
from test_sweep import write_config
from test_sweep_fuzz import ONE_CELL, small_config


def _counting(calls: list, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return fn(*args, **kwargs)
    return wrapper


def _declared(name: str) -> EvalRecord:
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label=name)
    record.model["grid_cell"] = parse_grid_cell("kwta_ratio=0.1,weight_sparsity=0")
    return record


def test_the_sweep_builds_its_matrices_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    record = _declared("a")
    result = SimpleNamespace(failed=[], records=lambda: [record], plans=[], outcomes={})
    monkeypatch.setattr(sweep_package, "run_sweep", lambda cfg, out_dir, progress: result)
    calls: list = []
    for module in (matrix_module, outputs_module):  # the command's import and write_outputs'
        monkeypatch.setattr(module, "build_matrices", _counting(calls, module.build_matrices))
    (tmp_path / "out" / "cells" / "a").mkdir(parents=True)  # the report reads the cells' records from the folder
    save_record(record, tmp_path / "out" / "cells" / "a" / "eval-1.json")
    config = write_config(tmp_path / "s.yaml", small_config(ONE_CELL))
    capsys.readouterr()
    assert main(["sweep", str(config), "--out-dir", str(tmp_path / "out"), "--no-progress", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    of_the_run = [args for args, _ in calls if args and any(r is record for r in args[0])]
    assert len(of_the_run) == 1  # was 2: written, then built again to print
    written = (tmp_path / "out" / "matrices.md").read_text(encoding="utf-8")
    assert "k/N \\ weight sparsity" in printed and "k/N \\ weight sparsity" in written
    assert printed.count("pgd") == written.count("pgd") > 0


def _model(label: str, flags: list[int]) -> EvalRecord:
    """A record of 4 samples attacked by PGD at Linf 0.1 and 0.3 (the same samples as every other one here)."""
    return make_record([make_result("pgd", flags, eps=0.1), make_result("pgd", flags, eps=0.3)], label=label)


def test_the_paired_table_names_the_threat_points_once_for_every_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [_model(name, flags) for name, flags in
               (("a", [1, 0, 1, 0]), ("b", [1, 1, 0, 0]), ("c", [0, 0, 1, 1]), ("d", [1, 1, 1, 0]))]
    before = [c for other in records[1:] for c in paired_module.paired_comparisons([records[0], other], records)]
    calls: list = []
    monkeypatch.setattr(paired_module, "threat_points", _counting(calls, paired_module.threat_points))
    table = paired_module.paired_table(records)
    assert len(calls) == 1  # was one per pair: 3 for 4 models
    assert table is not None and len(table.rows) == len(before) == 3 * 3  # clean and two points per pair
    assert [(cell_text(row[0]), cell_text(row[1]), cell_text(row[5]), cell_text(row[6])) for row in table.rows] == [
        (f"{c.reference} − {c.other}", "clean" if c.norm is None else f"worst case {point_text(c.norm, c.eps_text)}",
         str(c.only_reference), str(c.only_other)) for c in before]


def test_the_noise_differences_are_computed_once_and_stay_as_they_are() -> None:
    c = paired_module.NoisePairedComparison("kwta", "relu", "numenta", (2.0, 1.5, 1.0, 0.0), (1.5, 1.5, 1.5, 0.0))
    first = c.differences
    assert c.differences is first  # was a new list on every access: interval, higher, lower, difference
    assert first == (0.5, 0.0, -0.5, 0.0)
    assert (c.higher, c.lower, c.difference) == (1, 1, 0.0)
    with pytest.raises(TypeError):
        first[0] = 1.0  # type: ignore[index]  # a tuple: the comparison stays what it was made
    assert c == paired_module.NoisePairedComparison("kwta", "relu", "numenta", c.reference_scores, c.other_scores)


def test_the_harness_revision_reads_the_commit_once(monkeypatch: pytest.MonkeyPatch) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    reads: list = []
    asked: list = []
    monkeypatch.setattr(git_revision, "git_commit", _counting(reads, lambda root: commit))
    monkeypatch.setattr(git_revision, "tracked_changes", _counting(asked, lambda root: True))  # git: changed files
    harness = HarnessRevision()
    assert harness.matching(commit) == commit + "+dirty" == harness.revision
    assert harness.matching("f" * 40) is None
    assert len(reads) == 1 and len(asked) == 1  # was 2 reads: one for the commit, one again for +dirty
    assert reads[0][0] == (git_revision.package_root(),) == asked[0][0]


def test_diff_reads_each_differences_path_without_writing_its_line_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    first = make_record([make_result("pgd", [1, 0, 1, 0])], label="m")
    second = make_record([make_result("pgd", [1, 0, 1, 0])], label="m")
    first.provenance = {"torch_threads": 1, "device": "cpu", "platform": "a", "seed": 0}
    second.provenance = {"torch_threads": 2, "device": "cuda:0", "platform": "b", "seed": 1}
    paths = [str(tmp_path / name) for name in ("a.json", "b.json")]
    for record, path in zip((first, second), paths):
        save_record(record, Path(path))
    lines: list = []
    line = record_diff.Difference.line
    monkeypatch.setattr(record_diff.Difference, "line", property(_counting(lines, line.fget)))
    capsys.readouterr()
    assert main(["diff", *paths, "--limit", "1"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "4 field(s) differ:" and out[2] == "  ... and 3 more (--limit)"
    assert out[-1].startswith("the results are the same: only provenance differs")
    assert len(lines) == 2  # the printed one's (its cause, its text); was 6: every difference's again for the summary
    found = record_diff.differences(json.loads(Path(paths[0]).read_text()), json.loads(Path(paths[1]).read_text()))
    assert record_diff.verdicts_summary(found) == record_diff.verdicts_summary([d.line for d in found]) == out[-1]
