"""Resuming a record damaged or edited on disk (kwta_robust.resume.check_resumable, unplanned_unit,
check_config_hash): a record whose units contradict themselves, that holds a unit twice or one the config does not
plan, whose carried-on provenance or layer probe is garbage, or whose config was edited under its hash is refused
with one line naming the field (the file left as it was), or set aside with the set-aside policy — never resumed
into a record built on garbage, nor a raw traceback. A record the run wrote itself still resumes to the same
numbers."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.locks import LockError
from kwta_robust.results import load_record
from kwta_robust.resume import StalePolicy
from test_cli_eval import run_error, write_checkpoint, write_config
from test_evaluate import config, linear_problem

CANNOT = "cannot be resumed ({path}: {why}); use a new --out or --no-resume"


def problem() -> tuple[Any, Any, Any]:
    model, data = linear_problem(16)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.01, 0.05]}], batch_size=8,
                 attacks=[{"attack": "pgd", "params": {"steps": 5}}, "fgsm"])
    return model, data, cfg


@pytest.fixture(scope="module")
def complete(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The complete record of :func:`problem` as JSON, and the model, data and config that wrote it."""
    model, data, cfg = problem()
    out = tmp_path_factory.mktemp("base") / "r.json"
    evaluate(model, data, cfg, {}, out_path=out, progress=False)
    return {"record": json.loads(out.read_text()), "run": (model, data, cfg)}


def partial(record: dict) -> dict:
    """What an interrupted run leaves: the units and worst case of the second threat point not yet written."""
    record = copy.deepcopy(record)
    record["status"] = "partial"
    record["results"] = [r for r in record["results"] if r["eps"] == 0.01]
    record["worst_case"] = [w for w in record["worst_case"] if w["eps"] == 0.01]
    record["diagnostics"], record["provenance"]["finished_at"] = [], None
    return record


def pgd(record: dict) -> dict:
    return record["results"][0]


DAMAGE: list[tuple[str, Callable[[dict], None], str]] = [
    ("flags short", lambda r: pgd(r).update(flags=[1, 0]),
     CANNOT.format(path="{path}", why="results[0] (pgd, Linf 0.01): flags: 2 entries for 16 samples")),
    ("flag out of range", lambda r: pgd(r).update(flags=[2] * 16),
     CANNOT.format(path="{path}", why="results[0] (pgd, Linf 0.01): flags: value 2 is not one of -1, 0, 1")),
    ("flags as text", lambda r: pgd(r).update(flags=["1"] * 16),
     CANNOT.format(path="{path}", why="results[0] (pgd, Linf 0.01): flags: expected a list of integers")),
    ("flags null", lambda r: pgd(r).update(flags=None),
     CANNOT.format(path="{path}", why="results[0] (pgd, Linf 0.01): flags: expected a list of integers")),
    ("robust count", lambda r: pgd(r)["robust"].update(correct=0),
     CANNOT.format(path="{path}", why="results[0] (pgd, Linf 0.01): robust: accuracy 0.5625 contradicts its counts "
                                      "0/16 (0)")),
    ("unknown norm", lambda r: pgd(r).update(norm="l7"),
     CANNOT.format(path="{path}", why="results[0] (pgd, l7 0.01): unknown norm 'l7'")),
    ("unit twice", lambda r: r["results"].append(copy.deepcopy(pgd(r))),
     CANNOT.format(path="{path}", why="results hold two units of 'pgd' at Linf 0.01; keep one of them")),
    ("clean flags gone", lambda r: r.update(clean_flags=[]),
     CANNOT.format(path="{path}", why="clean_flags: 0 entries for 16 samples")),
    ("mode", lambda r: r.update(mode="weird"),
     CANNOT.format(path="{path}", why="mode 'weird' is not one of cascade, independent")),
    ("dataset.n", lambda r: r["dataset"].update(n=99),
     CANNOT.format(path="{path}", why="dataset.n = 99 but 16 samples were evaluated")),
    ("wall time text", lambda r: r["provenance"].update(wall_time_s="abc"),
     CANNOT.format(path="{path}", why="provenance.wall_time_s must be a finite number >= 0 or null, got 'abc'")),
    ("wall time list", lambda r: r["provenance"].update(wall_time_s=[1]),
     CANNOT.format(path="{path}", why="provenance.wall_time_s must be a finite number >= 0 or null, got [1]")),
    ("resumed_at text", lambda r: r["provenance"].update(resumed_at="2020"),
     CANNOT.format(path="{path}", why="provenance.resumed_at must be a list of strings, got '2020'")),
    ("resumed_on null", lambda r: r["provenance"].update(resumed_on=None),
     CANNOT.format(path="{path}", why="provenance.resumed_on must be a list of strings, got None")),
    ("torch threads 0", lambda r: r["provenance"].update(torch_threads=0),
     CANNOT.format(path="{path}", why="provenance.torch_threads must be an integer >= 1 or null, got 0")),
    ("detection key", lambda r: r.update(detection={"x": 1}),
     CANNOT.format(path="{path}", why="detection is not a layer probe this version reads (TypeError: "
                                      "Detection.__init__() got an unexpected keyword argument 'x')")),
    ("model.training", lambda r: r["model"].update(training="x"),
     CANNOT.format(path="{path}", why="model.training must be a JSON object or null, got 'x'")),
    ("unplanned attack", lambda r: pgd(r).update(label="cw"),
     "holds a unit the config does not plan ('cw' at Linf 0.01; another config's, or edited); use a new --out or "
     "--no-resume"),
    ("config edited", lambda r: r["config"].update(seed=7),
     CANNOT.format(path="{path}", why="config_hash does not match config: the record was edited; re-run the "
                                      "evaluation")),
]


@pytest.mark.parametrize(("name", "damage", "message"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_partial_record_is_refused_and_left_as_it_was(complete: dict, tmp_path: Path, name: str,
                                                                damage: Callable[[dict], None], message: str) -> None:
    record = partial(complete["record"])
    record["results"] = [r for r in record["results"] if r["label"] == "pgd"]  # fgsm (and its worst case) to come
    record["worst_case"] = []
    damage(record)
    out = tmp_path / "r.json"
    assert refused_resume(complete, record, out) == f"--out: {out} " + message.format(path=out)
    assert not (tmp_path / "superseded").exists()


def refused_resume(complete: dict, record: dict, out: Path) -> str:
    """The one-line error of resuming ``record`` (written to ``out``) with the ``complete`` fixture's run; the file
    must be left byte for byte as it was."""
    out.write_text(json.dumps(record))
    before = out.read_bytes()
    with pytest.raises(ConfigError) as refused:
        evaluate(*complete["run"], {}, out_path=out, progress=False)
    assert out.read_bytes() == before
    return str(refused.value)


@pytest.mark.parametrize(("where", "change", "why"), [
    ("a unit at an epsilon the config does not name",
     lambda r: r["results"].append({**copy.deepcopy(r["results"][1]), "eps": 0.07, "eps_text": "0.07"}),
     "holds a unit the config does not plan ('fgsm' at Linf 0.07; another config's, or edited)"),
    ("a worst case at a threat point without its units", lambda r: r["worst_case"][0].update(eps=0.3),
     "cannot be resumed ({out}: worst_case[0] (Linf 0.01): attack 'pgd' is not among the results at this threat "
     "model (none))"),
])
def test_a_complete_record_with_a_stray_entry_is_refused(complete: dict, tmp_path: Path, where: str,
                                                         change: Callable[[dict], None], why: str) -> None:
    record = copy.deepcopy(complete["record"])
    change(record)
    out = tmp_path / "r.json"
    out.write_text(json.dumps(record))
    with pytest.raises(ConfigError) as refused:
        evaluate(*complete["run"], {}, out_path=out, progress=False)
    assert str(refused.value) == f"--out: {out} {why.format(out=out)}; use a new --out or --no-resume", where
    assert json.loads(out.read_text()) == record


def test_a_damaged_record_is_set_aside_and_evaluated_afresh(complete: dict, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """The quickstart's and sweep's policy: the damaged record is kept, byte for byte, in superseded/ and the run
    writes the record an uninterrupted run writes."""
    record = partial(complete["record"])
    pgd(record)["flags"] = [1, 0]
    out = tmp_path / "r.json"
    out.write_text(json.dumps(record))
    before = out.read_bytes()
    fresh = evaluate(*complete["run"], {}, out_path=out, progress=False, stale=StalePolicy(set_aside=True))
    kept = tmp_path / "superseded" / f"r.{record['config_hash'][:12]}.json"
    assert kept.read_bytes() == before
    assert "flags: 2 entries for 16 samples); moved to" in caplog.text
    assert "resumed_at" not in fresh.provenance
    expected = {(r["label"], r["eps"]): r["flags"] for r in complete["record"]["results"]}
    assert {r.key[::2]: r.flags for r in load_record(out).results} == expected


@pytest.mark.parametrize("edit", ["none", "description"])
def test_a_partial_record_the_run_wrote_resumes_to_the_uninterrupted_numbers(complete: dict, tmp_path: Path,
                                                                           edit: str) -> None:
    """The checks refuse nothing a run writes itself: an interrupted run's record (and one whose description, no
    part of the config's identity, was reworded) resumes, and ends as the uninterrupted run's record."""
    record = partial(complete["record"])
    if edit == "description":
        record["config"]["description"] = "reworded"
    out = tmp_path / "r.json"
    out.write_text(json.dumps(record))
    resumed = evaluate(*complete["run"], {}, out_path=out, progress=False)
    assert len(resumed.provenance["resumed_at"]) == 1
    base = complete["record"]
    assert [(r.label, r.eps, r.flags) for r in resumed.results] == [
        (r["label"], r["eps"], r["flags"]) for r in base["results"]]
    assert [w.first_broken_by for w in resumed.worst_case] == [w["first_broken_by"] for w in base["worst_case"]]


def test_the_cli_refuses_a_damaged_record_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``evaluate --out`` end to end: a record whose per-sample flags were cut short, or whose wall time is text, is
    one ``error:`` line (exit 2, no traceback) and stays on disk; before, the first stopped the run only after it
    had saved the record again, deep in the cascade, and the second was a raw ``ValueError``."""
    ckpt, cfg = write_checkpoint(tmp_path / "m.pt"), write_config(tmp_path / "c.yaml", n_examples=4, batch_size=4,
                                                                    noise=[])
    out = tmp_path / "r.json"
    argv = ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    good = json.loads(out.read_text())
    for field, value, why in [("flags", [-1], "results[0] (pgd, Linf 8/255): flags: 1 entries for 4 samples"),
                              ("wall_time_s", "abc", "provenance.wall_time_s must be a finite number >= 0 or null, "
                                                     "got 'abc'")]:
        record = copy.deepcopy(good)
        (record["results"][0] if field == "flags" else record["provenance"])[field] = value
        out.write_text(json.dumps(record))
        before = out.read_bytes()
        line = run_error(capsys, argv)
        assert line == f"error: --out: {out} " + CANNOT.format(path=out, why=why)
        assert out.read_bytes() == before


@pytest.mark.parametrize("lock", ["folder", "link to a missing folder"])
def test_a_lock_path_that_is_no_file_is_one_line(complete: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 lock: str) -> None:
    """What a crash or a user left at ``<out>.lock`` that cannot be opened as a file: one line naming the lock file
    (before, a raw ``IsADirectoryError`` / ``FileNotFoundError``), and the record there is kept."""
    out = tmp_path / "r.json"
    out.write_text(json.dumps(partial(complete["record"])))
    before = out.read_bytes()
    path = tmp_path / "r.json.lock"
    if lock == "folder":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "gone" / "r.json.lock")
    why = "Is a directory" if lock == "folder" else "No such file or directory"
    with pytest.raises(LockError) as refused:
        evaluate(*complete["run"], {}, out_path=out, progress=False)
    assert str(refused.value) == (f"record: cannot open the lock file {path} of {out} ({why}); remove what is at that "
                                  "path or choose another output")
    ckpt, cfg = write_checkpoint(tmp_path / "m.pt"), write_config(tmp_path / "c.yaml", n_examples=4, batch_size=4)
    line = run_error(capsys, ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--no-progress"])
    assert line == f"error: --out: cannot open the lock file {path} of {out} ({why}); remove what is at that path " \
                   "or choose another output"
    assert out.read_bytes() == before
