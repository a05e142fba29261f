"""``kwta-robust diff``: two runs of one config are the same result; any other field that differs is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.api import evaluate_model
from kwta_robust.cli import main
from kwta_robust.record_diff import cause, record_differences

CONFIG = {"dataset": "toy", "batch_size": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [{"attack": "pgd", "params": {"steps": 3}}], "diagnostics": {"enabled": False}}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 3)).eval()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(12, 1, 4, 5, generator=gen), torch.randint(0, 3, (12,), generator=gen)
    folder = tmp_path_factory.mktemp("runs")
    for name in ("a.json", "b.json"):
        evaluate_model(model, CONFIG, x, y, out_path=folder / name, threads=1)
    return folder / "a.json", folder / "b.json"


def test_two_runs_of_one_config_are_the_same_result(two_runs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    a, b = (json.loads(p.read_text()) for p in two_runs)
    assert a["provenance"]["started_at"] and a["results"][0]["wall_time_s"] != b["results"][0]["wall_time_s"]
    assert main(["diff", str(two_runs[0]), str(two_runs[1])]) == 0
    assert capsys.readouterr().out.startswith("same result")


def test_a_changed_flag_and_thread_count_are_named(two_runs: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    data = json.loads(two_runs[1].read_text())
    broken = data["results"][0]["flags"].index(0)  # a broken sample's margin is >= 0 (diff checks as table does)
    data["results"][0]["margins"][broken] = 123.0
    data["provenance"]["torch_threads"] = 2
    changed = tmp_path / "c.json"
    changed.write_text(json.dumps(data))
    assert main(["diff", str(two_runs[0]), str(changed)]) == 1
    out = capsys.readouterr().out
    sample = data["dataset"]["indices"][broken]  # the path first, then which attack, threat point and sample
    assert f"results[0].margins[{broken}] (pgd, Linf 0.1; sample {broken}, data set id {sample}): " in out
    assert "!= 123.0" in out
    assert "provenance.torch_threads: 1 != 2  (CPU results are bit-reproducible for one torch thread count" in out


def test_volatile_fields_are_skipped_and_missing_keys_named() -> None:
    a = {"provenance": {"command": ["x"], "seed": 0}, "model": {"training": {"history": [{"seconds": 1.0}]}}}
    b = {"provenance": {"command": ["y"], "seed": 0}, "model": {"training": {"history": [{"seconds": 2.0}]}},
         "extra": 1}
    assert record_differences(a, b) == ["extra: only in the second"]


def test_a_resumed_runs_timestamps_are_volatile_and_its_thread_counts_explained() -> None:
    """``provenance.resumed_at`` holds start times (the README: diff skips timestamps); the thread counts of the
    resumed runs are a difference, named with their cause."""
    a = {"provenance": {"seed": 0, "resumed_at": ["2024-01-01T00:00:00+00:00"], "resumed_threads": [1]}}
    b = {"provenance": {"seed": 0, "resumed_at": ["2024-01-02T00:00:00+00:00"], "resumed_threads": [2]}}
    found = record_differences(a, b)
    assert found == ["provenance.resumed_threads[0]: 1 != 2"]
    assert "torch thread count" in (cause(found[0]) or "")


def test_a_resumed_run_is_the_same_result_unless_resumed_on_other_threads(
        two_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An interrupted run resumed with the same command records when, where and with how many threads it resumed
    (kwta_robust.resume.note_resume); diff called it another result than the uninterrupted run's."""
    data = json.loads(two_runs[1].read_text())
    prov = data["provenance"]
    prov.update(resumed_at=["2026-01-01T00:00:00+00:00"], resumed_on=[prov["device"]],
                resumed_threads=[prov["torch_threads"]])
    resumed = tmp_path / "resumed.json"
    resumed.write_text(json.dumps(data))
    assert main(["diff", str(two_runs[0]), str(resumed)]) == 0
    prov["resumed_threads"] = [prov["torch_threads"], 2]
    resumed.write_text(json.dumps(data))
    assert main(["diff", str(two_runs[0]), str(resumed)]) == 1
    out = capsys.readouterr().out
    assert "provenance.resumed_threads: only in the second  (resumed with another torch thread count" in out
    assert "resumed_at" not in out and "resumed_on" not in out
