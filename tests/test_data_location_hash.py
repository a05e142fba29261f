"""The config hash names the data by content, not by where they sit (:mod:`kwta_robust.config_digest`): a data
file moved (same bytes), another ``data_root``, or the shards of one evaluation run where the data sit elsewhere are
the same evaluation: it resumes (the config keeps the first run's location, ``provenance.resumed_data`` this run's),
its parts merge, ``diff`` and the tables pair its records. A changed file is still refused, and records hashed with
the data's path (before 2026-12-07) still load and resume."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from torch import nn

import kwta_robust.evaluate as evaluate_module
from kwta_robust.cli import main
from kwta_robust.comparability import comparability_notes
from kwta_robust.config import EvalConfig
from kwta_robust.config_digest import matches_hash
from kwta_robust.matrix_checks import config_differences
from kwta_robust.record_diff import record_differences
from kwta_robust.results import load_record
from test_cli_eval import run_error, write_checkpoint, write_config
from test_resume_samples import write_mnist

N = 12


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "mlp.pt")  # 1×28×28 → 10 classes


@pytest.fixture()
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path / "c.yaml", n_examples=8, batch_size=4, noise=[], attacks=["fgsm"],
                        threats=[{"norm": "linf", "epsilons": [0.05, 0.1]}])


def data_file(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.random.RandomState(seed).rand(N, 1, 28, 28).astype(np.float32), y=np.arange(N) % 10)
    return path


def argv(ckpt: Path, cfg: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["evaluate", str(ckpt), "--config", str(cfg), "--data", str(data), "--out", str(out), "--no-progress",
            *extra]


def interrupt_after(monkeypatch: pytest.MonkeyPatch, saves: int) -> None:
    """Stop the run (as Ctrl-C does) once ``saves`` records were written."""
    real_save, written = evaluate_module.save_record, []

    def interrupting_save(record, path, *encoder):
        real_save(record, path, *encoder)
        written.append(path)
        if len(written) == saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "save_record", interrupting_save)


def previous_hash(config: dict) -> str:
    """config_hash as versions before 2026-12-07 computed it: the data's path and root hashed too."""
    kept = {key: value for key, value in config.items() if key not in ("description", "device")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def test_the_hash_names_the_file_by_its_sha256_and_leaves_the_data_root_out() -> None:
    base = {"threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": ["fgsm"]}

    def digest(**data: object) -> str:
        return EvalConfig.from_dict({**base, **data}).config_hash()

    pinned = digest(dataset={"file": "/a/d.npz", "sha256": "ab" * 32})
    assert digest(dataset={"file": "/elsewhere/other-name.npz", "sha256": "ab" * 32}) == pinned
    assert digest(dataset={"file": "/a/d.npz", "sha256": "cd" * 32}) != pinned  # other content: another evaluation
    # not yet pinned (before the file is read): its path is all that names it
    assert digest(dataset={"file": "/a/d.npz"}) != digest(dataset={"file": "/b/d.npz"})
    assert digest(dataset="mnist", data_root="/data/a") == digest(dataset="mnist", data_root="/mnt/b") == \
        digest(dataset="mnist")
    assert digest(dataset="mnist", split="train") != digest(dataset="mnist")
    config = EvalConfig.from_dict({**base, "dataset": "mnist", "data_root": "/data/a"}).to_dict()
    assert matches_hash(config, previous_hash(config)) and previous_hash(config) != digest(dataset="mnist")


def test_a_moved_data_file_resumes_and_a_changed_one_is_refused(tmp_path, ckpt, cfg, capsys, caplog,
                                                                monkeypatch) -> None:
    first = data_file(tmp_path / "a" / "d.npz")
    out = tmp_path / "r.json"
    interrupt_after(monkeypatch, 4)  # the record started, its clean predictions and probes, the first unit
    assert main(argv(ckpt, cfg, first, out)) == 130
    monkeypatch.undo()
    partial = load_record(out)
    assert partial.status == "partial" and len(partial.results) == 1
    moved = tmp_path / "b" / "renamed.npz"
    moved.parent.mkdir()
    shutil.move(first, moved)
    with caplog.at_level(logging.INFO, logger="kwta_robust.resume"):
        assert main(argv(ckpt, cfg, moved, out)) == 0, capsys.readouterr().err
    record = load_record(out)
    assert record.status == "complete" and len(record.results) == 2 and record.config_hash == partial.config_hash
    assert record.config["dataset"]["file"] == str(first.resolve())  # the run that wrote the config read it there
    assert [entry["location"] for entry in record.provenance["resumed_data"]] == [str(moved.resolve())]
    assert any("reads the same data (the same sha256)" in r.getMessage() for r in caplog.records)
    whole = tmp_path / "whole.json"  # an uninterrupted run on the file where it is now: the same result
    assert main(argv(ckpt, cfg, moved, whole)) == 0
    assert main(["diff", str(out), str(whole)]) == 0, capsys.readouterr().out
    data_file(moved, seed=1)  # other bytes under the new name: another evaluation
    line = run_error(capsys, argv(ckpt, cfg, moved, out))
    assert "holds a record of another config (dataset.sha256: " in line, line  # the key that differs, named
    assert line.endswith(" now); use a new --out or --no-resume"), line


def test_another_data_root_resumes_the_same_evaluation(tmp_path, ckpt, capsys) -> None:
    # MNIST read from a folder (the same files under two roots): mnist5k ships with the package and reads no
    # folder, so --data-root with it is refused (walk53)
    cfg = write_config(tmp_path / "c.yaml", dataset="mnist", n_examples=8, batch_size=8, noise=[], attacks=["fgsm"],
                       threats=[{"norm": "linf", "epsilons": [0.1]}])
    out, roots = tmp_path / "r.json", [tmp_path / "m1", tmp_path / "m2"]
    labeller = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    for root in roots:
        write_mnist(root, labeller, 0)
        assert main(["evaluate", str(ckpt), "--config", str(cfg), "--data-root", str(root), "--out", str(out),
                     "--no-progress"]) == 0, capsys.readouterr().err
    record = load_record(out)
    assert record.config["data_root"] == str(roots[0])
    assert [entry["location"] for entry in record.provenance["resumed_data"]] == [str(roots[1])]


def test_a_record_hashed_with_its_data_path_loads_and_resumes_from_another_path(tmp_path, ckpt, cfg, capsys,
                                                                                monkeypatch) -> None:
    first = data_file(tmp_path / "a" / "d.npz")
    out = tmp_path / "r.json"
    interrupt_after(monkeypatch, 4)
    assert main(argv(ckpt, cfg, first, out)) == 130
    monkeypatch.undo()
    data = json.loads(out.read_text())
    data["config_hash"] = previous_hash(data["config"])  # as today's record was hashed before 2026-12-07
    out.write_text(json.dumps(data))
    assert main(["table", str(out), "--allow-partial"]) == 0, capsys.readouterr().err
    moved = tmp_path / "b" / "d.npz"
    moved.parent.mkdir()
    shutil.move(first, moved)
    assert main(argv(ckpt, cfg, moved, out)) == 0, capsys.readouterr().err
    record = load_record(out)
    assert record.status == "complete" and len(record.results) == 2 and record.config_hash == data["config_hash"]


def test_shards_interrupted_at_one_path_merge_with_the_data_at_another(tmp_path, ckpt, cfg, capsys,
                                                                        monkeypatch) -> None:
    first = data_file(tmp_path / "m1" / "d.npz")
    out, shards = tmp_path / "s.json", ("--shards", "2", "--executor", "inline")
    interrupt_after(monkeypatch, 3)  # the layer probe's part and the first part of the attacks
    assert main(argv(ckpt, cfg, first, out, *shards)) == 130
    monkeypatch.undo()
    assert not out.exists() and Path(f"{out}.parts").is_dir()
    moved = tmp_path / "m2" / "d.npz"  # the other machine: the same bytes at another path
    moved.parent.mkdir()
    shutil.copy(first, moved)
    first.unlink()
    assert main(argv(ckpt, cfg, moved, out, *shards)) == 0, capsys.readouterr().err
    plain = tmp_path / "plain.json"
    shutil.copy(moved, first)
    assert main(argv(ckpt, cfg, first, plain)) == 0
    found = record_differences(*(json.loads(path.read_text()) for path in (out, plain)))
    assert found == ["provenance.shards: only in the first"]  # nor the data's path, nor the config hash
    records = {"sharded": load_record(out), "plain": load_record(plain)}
    assert records["sharded"].dataset["name"] != records["plain"].dataset["name"]  # the paths each run read
    assert comparability_notes(list(records.values())) == [] and config_differences(records) == {}
