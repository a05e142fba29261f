"""What a reviewer who receives someone else's record needs (README, "Reproducing a record"): ``--config RECORD.json``
re-runs the evaluation the record names (its stored config, refused when edited by hand), and a record at ``--out``
that another config wrote is refused naming the first config key that differs, not only "another config"."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from eval_helpers import make_record, rehash
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError
from kwta_robust.resume import stale_reason

QUICK = Path(__file__).resolve().parents[1] / "eval_configs" / "quick.yaml"


def record_file(tmp_path: Path, config: dict, config_hash: str) -> Path:
    path = tmp_path / "theirs.json"
    path.write_text(json.dumps({"schema_version": 3, "status": "complete", "config": config,
                                "config_hash": config_hash, "results": []}), encoding="utf-8")
    return path


def test_a_record_given_as_config_is_evaluated_with_the_config_it_stores(tmp_path: Path) -> None:
    cfg = EvalConfig.from_yaml(QUICK).with_overrides(n_examples=12, batch_size=4)
    path = record_file(tmp_path, cfg.to_dict(), cfg.config_hash())
    again = EvalConfig.from_yaml(path)
    assert again.to_dict() == cfg.to_dict() and again.config_hash() == cfg.config_hash()
    assert EvalConfig.from_yaml(path).with_overrides(n_examples=6).n_examples == 6  # CLI overrides still apply


def test_a_record_whose_config_was_edited_is_refused_as_config(tmp_path: Path) -> None:
    cfg = EvalConfig.from_yaml(QUICK)
    edited = cfg.to_dict()
    edited["n_examples"] = 7  # changed after the run, the hash left as it was
    path = record_file(tmp_path, edited, cfg.config_hash())
    with pytest.raises(ConfigError) as info:
        EvalConfig.from_yaml(path)
    line = str(info.value)
    assert line.startswith("--config: ") and "evaluation record" in line and "config_hash" in line
    assert "\n" not in line


def test_another_config_at_out_names_its_first_differing_key() -> None:
    fresh = make_record(n=4)
    fresh.config = {"seed": 0, "batch_size": 200, "attacks": [{"attack": "pgd", "params": {"steps": 10}}],
                    "description": "mine", "device": "cpu"}
    rehash(fresh)
    old = copy.deepcopy(fresh)
    old.config["attacks"][0]["params"]["steps"] = 20
    old.config["description"] = "theirs"  # not hashed: never the key named
    rehash(old)
    assert stale_reason(old, fresh) == ("holds a record of another config (attacks[0].params.steps: 20 in the "
                                        "record, 10 now)")
    old.config["batch_size"] = 16
    rehash(old)
    assert stale_reason(old, fresh) == "holds a record of another config (batch_size: 16 in the record, 200 now)"


def test_diff_says_when_only_provenance_or_last_bits_differ() -> None:
    """A reviewer's re-run on another commit or thread count differs in provenance or margins only: ``diff`` still
    exits 1, and says in one line that no verdict moved; a verdict, count or config that differs gets no such line."""
    from kwta_robust.record_diff import record_differences, verdicts_summary

    base = {"status": "complete", "results": [{"flags": [1, 0], "margins": [-1.5, 0.25], "queries": 10,
                                               "robust": {"correct": 1, "accuracy": 0.5}}],
            "clean_margins": [2.0, 1.0], "probes": {"mean_grad_l1": 3.0},
            "provenance": {"torch_threads": 1, "versions": {"kwta_robust_git": "a"}}}
    commit = copy.deepcopy(base)
    commit["provenance"]["versions"]["kwta_robust_git"] = "b"
    assert verdicts_summary(record_differences(base, commit)).startswith("the results are the same: only provenance")
    threads = copy.deepcopy(commit)
    threads["provenance"]["torch_threads"] = 2
    threads["results"][0]["margins"][0] = -1.5000001
    threads["clean_margins"][1] = 1.0000002
    threads["probes"]["mean_grad_l1"] = 3.0000001
    threads["results"][0]["queries"] = 12
    assert verdicts_summary(record_differences(base, threads)).startswith("the verdicts are the same: ")
    for path, value in ((("results", 0, "flags", 1), 1), (("results", 0, "robust", "accuracy"), 0.75),
                        (("status",), "partial")):
        changed = copy.deepcopy(threads)
        at = changed
        for key in path[:-1]:
            at = at[key]
        at[path[-1]] = value
        assert verdicts_summary(record_differences(base, changed)) is None, path
    assert verdicts_summary([]) is None


def test_a_pinned_data_file_that_moved_names_data_as_the_fix(tmp_path: Path) -> None:
    """A record's config names the data file where its run read it, with its sha256: on the reviewer's machine the
    file sits elsewhere, and the one line says to give it with --data (before: only "check the path")."""
    from kwta_robust.datafile import DataError, check_data_file, read_data_file

    gone = tmp_path / "elsewhere" / "test.pt"
    data = EvalConfig.from_yaml(QUICK).to_dict()
    cfg = EvalConfig.from_dict({**data, "dataset": {"file": str(gone), "sha256": "ab" * 32}, "data_root": None})
    for call in (lambda: check_data_file(cfg), lambda: read_data_file(gone, pinned="ab" * 32)):
        with pytest.raises(DataError) as info:
            call()
        line = str(info.value)
        assert line.startswith(f"--data {gone}: file not found") and "pins the file's sha256 (abababababab" in line
        assert "give the file where it is now with --data FILE" in line and "\n" not in line
    with pytest.raises(DataError, match="file not found; check the path$"):  # nothing pinned: the plain line
        read_data_file(gone)
