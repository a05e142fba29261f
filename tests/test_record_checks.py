"""Records before rendering (consistency, partial records marked in every format), the result identity without the
device (resume after --device auto vs cpu), a resume at another thread count, and every output path inside the
folder the user chose."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from eval_helpers import make_record, make_result, unfinish_record
from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.cli import main
from kwta_robust.compare import model_labels
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError
from kwta_robust.models import ModelSpec
from kwta_robust.record_checks import check_record
from kwta_robust.report import PARTIAL_NOTE
from kwta_robust.results import RecordError, load_record, save_record
from kwta_robust.safe_paths import child_path, is_inside, sanitize_name
from kwta_robust.sweep import SweepConfig, plan_cells

torch.set_num_threads(1)

EVAL = {"dataset": "mnist5k", "n_examples": 6, "batch_size": 6, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
        "diagnostics": {"enabled": False}}


def good_record():
    return make_record([make_result("pgd", [1, 0, -1, 1]), make_result("fgsm", [1, -1, -1, 0], position=1,
                                                                       cumulative=True)],
                       clean_flags=[1, 1, 0, 1])


def test_a_consistent_record_passes_and_each_contradiction_is_named() -> None:
    check_record(good_record(), "r.json")

    def broken(change) -> str:
        rec = good_record()
        change(rec)
        with pytest.raises(RecordError) as info:
            check_record(rec, "r.json")
        return str(info.value)

    assert "sample 2 was misclassified clean but has flag 1" in broken(
        lambda r: r.results[0].flags.__setitem__(2, 1))
    assert "n_broken = 5 but its flags count 1" in broken(lambda r: setattr(r.results[0], "n_broken", 5))
    assert "is not the Wilson interval of 3/4" in broken(lambda r: setattr(r.clean, "ci_low", 0.0))
    assert "dataset.n = 7" in broken(lambda r: r.dataset.update(n=7))
    assert "eps must be a finite number >= 0, got '0.3'" in broken(lambda r: setattr(r.results[1], "eps", "0.3"))
    assert "marks misclassified samples (-2) unlike clean_flags" in broken(
        lambda r: r.worst_case[0].first_broken_by.__setitem__(2, -1))

    assert "clean_margins: expected one margin per sample (4)" in broken(lambda r: setattr(r, "clean_margins", [-1.0]))
    assert "clean_margins: entry 2 (-0.5) contradicts clean_flags (0)" in broken(
        lambda r: setattr(r, "clean_margins", [-1.0, -2.0, -0.5, -1.0]))
    assert "clean_margins: entry 0 is not a finite number: 'x'" in broken(
        lambda r: setattr(r, "clean_margins", ["x", -2.0, 0.5, -1.0]))
    fine = good_record()
    fine.clean_margins = [-1.0, None, 0.5, 0.0]  # null where not finite; 0 (a tie) either way
    check_record(fine, "r.json")
    # an attack's margins (pgd's flags: survived, broken, not attacked, survived)
    assert "margins: expected one margin per sample (4)" in broken(lambda r: setattr(r.results[0], "margins", [-1.0]))
    assert "(pgd, Linf 0.3): margins: entry 1 (-0.5) contradicts flags (0)" in broken(
        lambda r: setattr(r.results[0], "margins", [-1.0, -0.5, None, -2.0]))
    assert "(pgd, Linf 0.3): margins: entry 0 (0.25) contradicts flags (1)" in broken(
        lambda r: setattr(r.results[0], "margins", [0.25, 0.5, None, -2.0]))
    assert "margins: entry 2 is a number but the sample was not attacked" in broken(
        lambda r: setattr(r.results[0], "margins", [-1.0, 0.5, -3.0, -2.0]))
    fine.results[0].margins = [-1.0, 0.0, None, None]  # a tie either way; null where not finite
    check_record(fine, "r.json")

    def worst_above(r) -> None:  # a worst case that claims more robust samples than an attack left
        w = r.worst_case[0]
        w.first_broken_by = [-1, -1, -2, -1]
        w.robust = type(w.robust).of(3, 4)
    assert "pgd leaves 2 samples robust, fewer than the worst case (3)" in broken(worst_above)

    # the worst case against the per-sample results it was derived from (a hand edit, a merge, a dropped key)
    assert "worst_case[0] (Linf 0.3): attack 'pgd' is not among the results at this threat model (none)" in broken(
        lambda r: setattr(r, "results", []))
    assert "sample 1 is first broken by 'fgsm', whose flag there is -1" in broken(
        lambda r: r.worst_case[0].first_broken_by.__setitem__(1, 1))
    # a field of the wrong type (a hand edit): one line naming it, not a traceback in a table later
    assert "results[0].label must be a string, got None" in broken(lambda r: setattr(r.results[0], "label", None))
    assert "results[1].position must be an integer >= 0, got 1.5" in broken(
        lambda r: setattr(r.results[1], "position", 1.5))
    assert "wall_time_s must be a finite number >= 0 (null in the file: not measured), got None" in broken(
        lambda r: setattr(r.results[0], "wall_time_s", None))
    assert "queries must be an integer >= 0 or null, got '9'" in broken(lambda r: setattr(r.results[0], "queries", "9"))
    both = make_record([make_result("pgd", [1, 0, -1, 1]), make_result("fgsm", [0, 1, -1, 1], position=1)],
                       clean_flags=[1, 1, 0, 1], mode="independent")
    check_record(both, "r.json")
    w = both.worst_case[0]
    assert w.first_broken_by == [1, 0, -2, -1]
    w.first_broken_by, w.robust = [-1, 0, -2, -1], type(w.robust).of(2, 4)  # as robust as each attack, but not so
    with pytest.raises(RecordError, match="sample 0 is counted robust but 'fgsm' broke it"):
        check_record(both, "r.json")


def test_the_worst_case_is_checked_against_its_own_first_breakers() -> None:
    """good_record's worst case: pgd broke sample 1, fgsm sample 3, sample 2 is clean-wrong, sample 0 never broken
    (first_broken_by [-1, 0, -2, 1], 1 robust). Each hand edit below contradicts that, whatever its direction."""
    def refused(change) -> str:
        rec = good_record()
        assert rec.worst_case[0].first_broken_by == [-1, 0, -2, 1] and rec.worst_case[0].robust.correct == 1
        change(rec.worst_case[0])
        with pytest.raises(RecordError) as info:
            check_record(rec, "r.json")
        return str(info.value)

    # fewer robust than never-broken samples (more robust is refused too, by the weaker-attack check)
    assert "robust.correct = 0 but 1 samples were never broken" in refused(
        lambda w: setattr(w, "robust", type(w.robust).of(0, 4)))
    # an attack index past the list (2 attacks: 0 and 1)
    assert "first_broken_by: value 2 is not one of -2, -1, 0, 1" in refused(
        lambda w: w.first_broken_by.__setitem__(1, 2))
    # sample 3 credited to the first attack (index 0), which left it robust
    assert "sample 3 is first broken by 'pgd', whose flag there is 1" in refused(
        lambda w: w.first_broken_by.__setitem__(3, 0))


def test_partial_records_are_refused_or_marked_in_every_format(tmp_path: Path, capsys) -> None:
    rec = good_record()
    rec.status = "partial"
    path = tmp_path / "p.json"
    save_record(rec, path)
    assert main(["table", str(path)]) == 2
    assert "--allow-partial" in capsys.readouterr().err
    outputs = {}
    for fmt in ("md", "csv", "latex", "json"):
        for layout in ("wide", "long"):
            assert main(["table", str(path), "--allow-partial", "--format", fmt, "--layout", layout]) == 0
            outputs[fmt, layout] = capsys.readouterr().out
            assert "model [partial]" in outputs[fmt, layout]
            assert "unfinished evaluation" in outputs[fmt, layout]  # CSV's note was missing: a note column now
    for layout in ("wide", "long"):  # the note is a last column, on the partial record's rows: still one table
        rows = list(csv.reader(io.StringIO(outputs["csv", layout])))
        assert rows[0][-1] == "note" and {len(row) for row in rows} == {len(rows[0])}
        assert {row[-1] for row in rows[1:]} == {PARTIAL_NOTE}
    save_record(good_record(), tmp_path / "c.json")
    assert main(["table", str(path), str(tmp_path / "c.json"), "--allow-partial", "--format", "csv"]) == 0
    assert [row["note"] for row in csv.DictReader(io.StringIO(capsys.readouterr().out))] == [PARTIAL_NOTE, ""]
    assert list(csv.DictReader(io.StringIO(outputs["csv", "wide"])))[0]["model"] == "model [partial]"
    assert json.loads(outputs["json", "wide"])["rows"][0]["model"] == "model [partial]"
    for flags in (["--allow-partial", "--matrix"], ["--matrix"]):  # matrices never take partial records: the error
        assert main(["table", str(path), *flags]) == 2  # of --matrix alone suggested --allow-partial, which fails too
        assert capsys.readouterr().err.strip() == (f"error: {path}: partial record (its evaluation did not finish); "
                                                   "re-run its command to finish it (matrices take complete records "
                                                   "only)")


def test_device_is_not_part_of_the_result_identity(tmp_path: Path, capsys) -> None:
    cfg = EvalConfig.from_dict(EVAL)
    assert cfg.config_hash() == cfg.with_overrides(device="auto").config_hash()
    assert cfg.config_hash() != cfg.with_overrides(seed=1).config_hash()
    spec = ModelSpec.from_args("mlp", activation="relu", hidden=[8])
    ckpt = save_checkpoint(tmp_path / "m.pt", spec.build(), spec, {"dataset": "mnist5k"})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(EVAL))
    out = tmp_path / "r.json"
    argv = ["evaluate", str(ckpt), "--config", str(config), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    first = load_record(out)
    assert main(argv + ["--device", "auto"]) == 0, capsys.readouterr().err  # resumed, not refused
    resumed = load_record(out)
    assert resumed.provenance["resumed_on"] == ["cuda:0" if torch.cuda.is_available() else "cpu"]
    assert [r.flags for r in resumed.results] == [r.flags for r in first.results]  # finished units kept
    assert resumed.config == first.config and resumed.provenance["device"] == "cpu"  # the first run's, as provenance


def _small_evaluation(tmp_path: Path) -> tuple[Path, list[str]]:
    """A small ReLU MLP's checkpoint and the EVAL config under ``tmp_path``: the record path and the evaluate argv."""
    spec = ModelSpec.from_args("mlp", activation="relu", hidden=[8])
    ckpt = save_checkpoint(tmp_path / "m.pt", spec.build(), spec, {"dataset": "mnist5k"})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(EVAL))
    out = tmp_path / "r.json"
    return out, ["evaluate", str(ckpt), "--config", str(config), "--out", str(out), "--no-progress"]


def test_a_resume_at_another_thread_count_keeps_both_counts_and_warns(tmp_path: Path, caplog) -> None:
    # the resumed record used to say torch_threads 2 while its first units ran with 1 thread: a record that neither
    # --threads 1 nor --threads 2 reproduces, with nothing to say so
    out, argv = _small_evaluation(tmp_path)
    argv = [*argv, "--threads", "1"]
    assert main(argv) == 0
    with caplog.at_level("WARNING", logger="kwta_robust.resume"):
        unfinish_record(out)  # units left to compute (a complete record computes none: nothing to warn about)
        assert main(argv) == 0  # the same count: resumed quietly
        assert not caplog.records
        unfinish_record(out)
        assert main([*argv[:-1], "2"]) == 0
    resumed = load_record(out)
    assert resumed.provenance["torch_threads"] == 1 and resumed.provenance["resumed_threads"] == [1, 2]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"{out}: its finished units ran with 1 torch threads, this run uses 2")
    assert warning.endswith("re-run with --threads 1 to match")


def test_no_resume_beside_the_parts_of_an_interrupted_sharded_run_removes_them(tmp_path: Path, capsys) -> None:
    # the refusal says "--no-resume to start over without them"; that run finished, but left the parts, and every
    # later run of the same command refused its complete record as an interrupted sharded run
    out, argv = _small_evaluation(tmp_path)
    parts = tmp_path / "r.json.parts"
    parts.mkdir()
    (parts / "attacks-0-6-linf-0.1.json").write_text("{}")
    assert main(argv) == 2 and "holds the finished parts of an interrupted sharded run" in capsys.readouterr().err
    assert main([*argv, "--no-resume"]) == 0 and not parts.exists()
    assert main(argv) == 0, capsys.readouterr().err  # the complete record, resumed
    assert load_record(out).status == "complete"


def test_outputs_stay_inside_the_chosen_folder(tmp_path: Path, capsys) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)  # a name that resolves outside through a symbolic link
    with pytest.raises(ConfigError, match="outside"):
        child_path(root, "link", "--labels")
    for bad in ("../x", "/abs", "a/b", "..", ".", "", "a\nb", "x\x00y", "a\\b"):
        with pytest.raises(ConfigError):
            child_path(root, bad, "--labels", ".json")
    assert sanitize_name("a\nb/c") == "a_b_c" and sanitize_name("..") == "model"
    # two checkpoints of one file name in two folders: numbered labels (and record files), never one overwriting
    assert model_labels(["a/model.pt", "b/model.pt", "c/model-2.pt"]) == ["model", "model-2", "model-2-2"]
    assert model_labels(["a/model.pt", "b/model.pt"], ["kwta", "relu"]) == ["kwta", "relu"]
    # derived labels (checkpoint stems) are sanitized: a file name with a line break still lands in --out-dir
    spec = ModelSpec.from_args("mlp", activation="relu", hidden=[8])
    odd = save_checkpoint(tmp_path / "odd\nname.pt", spec.build(), spec, {"dataset": "mnist5k"})
    plain = save_checkpoint(tmp_path / "plain.pt", spec.build(), spec, {"dataset": "mnist5k"})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(EVAL))
    assert main(["compare", str(odd), str(plain), "--config", str(config), "--out-dir", str(root / "cmp"),
                 "--no-progress", "--no-transfer"]) == 0
    assert sorted(p.name for p in (root / "cmp").glob("*.json")) == ["odd_name.json", "plain.json"]
    assert all(is_inside(p, root / "cmp") for p in (root / "cmp").rglob("*"))
    # every path a sweep plans resolves under its --out-dir
    sweep = SweepConfig.from_dict({
        "name": "x", "train": {"dataset": "digits", "arch": "mlp", "arch_kwargs": {"hidden": [4]}, "device": "cpu"},
        "grid": {"kwta_ratios": [1.0, 0.5], "weight_sparsities": [0.0, 0.5]},
        "eval": {**EVAL, "dataset": "digits"}})
    for plan in plan_cells(sweep, root / "sweep"):
        for path in (plan.directory, plan.checkpoint, plan.record_path):
            assert is_inside(path, root / "sweep"), path
    assert not any(name.startswith(".kwta-robust-write-check") for name in os.listdir(root))


def _message(rec) -> str | None:
    try:
        check_record(rec, "r.json")
    except RecordError as exc:
        return str(exc)
    return None


def test_whole_list_checks_name_the_same_first_contradiction_as_the_loops(monkeypatch) -> None:
    """The per-sample checks test each list at once and run their loops only on a list that fails (a 10,000-sample
    record of 21 units: 0.4 s a record before): every corruption gets the message the loops alone give."""
    import random

    from kwta_robust import record_checks as rc

    def record(rng: random.Random):
        clean = [rng.choice([0, 1, 1, 1]) for _ in range(40)]
        results = []
        for j in range(3):
            flags = [rng.choice([0, 1]) if c else -1 for c in clean]
            if j:  # cascade-like: later attacks skip some samples
                flags = [-1 if rng.random() < 0.3 else f for f in flags]
            r = make_result(f"a{j}", flags, position=j)
            r.margins = [None if f == -1 else (rng.uniform(0.0, 2) if f == 0 else -rng.uniform(0.0, 2)) for f in flags]
            r.error_rates = [None if f == -1 else (rng.choice([0.5, 0.75, 1.0]) if f == 0 else rng.choice([0.0, 0.25]))
                             for f in flags]
            results.append(r)
        rec = make_record(results, clean_flags=clean, mode="independent")
        rec.clean_margins = [-rng.random() if c else rng.random() for c in clean]
        rec.clean_error_rates = [rng.choice([0.0, 0.25]) if c else rng.choice([0.5, 1.0]) for c in clean]
        return rec

    lists = [lambda r: r.clean_flags, lambda r: r.clean_margins, lambda r: r.clean_error_rates,
             *[lambda r, j=j, k=k: getattr(r.results[j], k) for j in range(3) for k in ("flags", "margins",
                                                                                        "error_rates")],
             lambda r: r.worst_case[0].first_broken_by]
    values = [-3, -2, -1, 0, 1, 2, True, False, None, 0.0, 0.5, -0.5, 1.5, 2.0, float("nan"), float("inf"), "x", 0.75,
              0.25, 1.0]
    rng = random.Random(0)
    slow = {"_ints_only": lambda values: not any(isinstance(v, bool) or not isinstance(v, int) for v in values),
            "_numbers": lambda values: None, "_all_allowed": lambda values, allowed: False,
            "_may_attack_wrong": lambda flags, clean: True, "_may_mark_unattacked": lambda margins, flags: True,
            "_first_broken_agrees": lambda *args: False}
    fast_funcs = {name: getattr(rc, name) for name in slow}
    seen = set()
    for trial in range(400):
        seed = rng.random()
        pick, at, value = rng.randrange(len(lists)), rng.randrange(40), rng.choice(values)
        if trial % 4 == 1:  # the worst case credited to another attack (its counts unchanged)
            pick, value = len(lists) - 1, rng.choice([0, 1, 2])
        messages = []
        for funcs in (fast_funcs, slow):
            for name, func in funcs.items():
                monkeypatch.setattr(rc, name, func)
            rec = record(random.Random(seed))
            first = rec.worst_case[0].first_broken_by
            if trial % 4 == 3 and max(first) >= 0:  # a broken sample counted robust, and the count with it
                first[first.index(max(first))] = -1
                rec.worst_case[0].robust = type(rec.worst_case[0].robust).of(first.count(-1), len(first))
            elif trial:  # the first: the record as made
                lists[pick](rec)[at] = value
            messages.append(_message(rec))
        assert messages[0] == messages[1], (pick, at, value)
        seen.add(messages[0] is None)
        if trial == 0:
            assert messages[0] is None
    assert seen == {True, False}
