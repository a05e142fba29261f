"""Mutation review (session 46, second pass) of the config hash that names the data by content: each test kills a
mutant of kwta_robust/config_digest.py, comparability.py or resume.py that today's tests let survive."""

from __future__ import annotations

import logging
from types import MappingProxyType

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.comparability import comparability_notes, data_set_key, label_difference, same_samples
from kwta_robust.config_digest import (LEGACY_UNHASHED_KEYS, config_digest, data_location, identity_hash,
                                       matches_hash, without_location)
from kwta_robust.errors import ConfigError
from kwta_robust.matrix import build_matrices
from kwta_robust.matrix_checks import config_differences
from kwta_robust.resume import check_resumable, differences, note_data_moved
from kwta_robust.results import RecordError
from kwta_robust.weights_read import _missing_code
from test_matrix import grid_records

PLACED = {"seed": 0, "device": "cpu", "data_root": "/data/a", "dataset": "mnist"}


def test_a_record_hashed_before_commit_e63d42a_with_its_data_root_still_matches() -> None:
    legacy = config_digest(PLACED, LEGACY_UNHASHED_KEYS, located=True)  # the device and the data root hashed
    assert matches_hash(PLACED, legacy)
    assert identity_hash(PLACED, legacy) == config_digest(PLACED) != legacy


def test_identity_hash_of_a_config_json_cannot_encode_is_its_stored_hash() -> None:
    assert identity_hash({"seed": {1, 2}}, "stored") == "stored"


def test_a_dataset_spec_without_a_file_key_hashes_as_before() -> None:
    config = {"seed": 0, "dataset": {"name": "arrays", "sha256": "ab" * 32}}
    assert without_location(config) == config
    assert config_digest(config) == config_digest(config, located=True)


def test_data_location_reads_any_mapping_spec() -> None:
    assert data_location({"dataset": MappingProxyType({"file": "x.npz"}), "data_root": "/r"}) == "x.npz"
    assert data_location({"dataset": "mnist", "data_root": "/r"}) == "/r"


def _file_record(path: str, sha: str = "cd" * 32, split: str = "test", label: str = "m") -> object:
    rec = make_record(label=label, n=4)
    rec.config = {"seed": 0, "dataset": {"file": path, "sha256": sha}}
    rec.config_hash = config_digest(rec.config, located=True)  # hashed with the path, as before 2026-12-07
    rec.dataset = {"name": path, "split": split, "n": 4, "indices": [0, 1, 2, 3], "sha256": sha}
    return rec


def test_data_set_key_of_a_data_file_keeps_its_split() -> None:
    assert data_set_key(_file_record("a.npz", split="val")) == (f"file sha256:{'cd' * 32}", "val")


def test_data_set_key_of_a_data_file_not_yet_pinned_is_its_name() -> None:
    rec = _file_record("a.npz")
    rec.config["dataset"]["sha256"] = None
    assert data_set_key(rec) == ("a.npz", "test")


def test_same_indices_of_other_in_memory_arrays_are_other_samples() -> None:
    a, b = make_record(n=4), make_record(n=4)
    a.dataset["sha256"], b.dataset["sha256"] = "1" * 64, "2" * 64
    assert not same_samples(a, b)
    b.dataset["sha256"] = "1" * 64
    assert same_samples(a, b)


def test_one_config_hashed_with_two_paths_is_one_config_to_compare() -> None:
    a, b = _file_record("/one/a.npz", label="a"), _file_record("/two/a.npz", label="b")
    assert a.config_hash != b.config_hash
    notes = " ".join(comparability_notes([a, b]))
    assert "different evaluation configs" not in notes and "different data sets" not in notes
    entries = [("a", a, {"steps": 40}), ("b", b, {"steps": 100})]
    assert label_difference("pgd", entries).endswith("(one config: versions with other attack defaults wrote them; "
                                                     "evaluate them again with one version)")


def _moved(before: str | None, now: str | None) -> tuple:
    old, fresh = make_record(), make_record()
    old.config, fresh.config = {"seed": 0, "data_root": before}, {"seed": 0, "data_root": now}
    fresh.provenance["started_at"] = "2026-12-07T08:00:00"
    return old, fresh


def test_resuming_where_the_data_sat_notes_no_move() -> None:
    old, fresh = _moved("/data", "/data")
    note_data_moved(old, fresh, None)
    assert "resumed_data" not in old.provenance


def test_each_resumed_run_reading_the_data_elsewhere_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    old, fresh = _moved(None, "/b")
    with caplog.at_level(logging.INFO, logger="kwta_robust.resume"):
        note_data_moved(old, fresh, None)
        note_data_moved(old, fresh, None)
    assert old.provenance["resumed_data"] == [{"resumed_at": "2026-12-07T08:00:00", "location": "/b"}] * 2
    assert "names the data at the default root, this run reads the same data (checked by samples_sha256) at /b" \
        in caplog.text


def test_resumed_data_that_is_no_list_is_refused_on_resume() -> None:
    rec = make_record()
    rec.provenance["resumed_data"] = "elsewhere"
    with pytest.raises(RecordError, match="resumed_data"):
        check_resumable(rec, "r.json")


def test_matrix_cells_of_one_config_at_two_paths_agree_and_a_data_root_is_no_difference() -> None:
    a, b = _file_record("/one/a.npz", label="a"), _file_record("/two/a.npz", label="b")
    assert config_differences({"a": a, "b": b, "c": _file_record("/three/a.npz", label="c")}) == {}
    roots = [make_record(label=name) for name in "xyz"]
    for rec, root, seed in zip(roots, ["/x", "/y", "/z"], [0, 0, 1]):
        rec.config = {"seed": seed, "data_root": root}
        rec.config_hash = config_digest(rec.config)
    assert config_differences(dict(zip("xyz", roots))) == {
        "z": "evaluated with another evaluation config than the other cells (differs in: seed)"}


def test_a_cell_of_another_data_set_is_told_so() -> None:
    cells = {name: make_record(label=name) for name in "abc"}
    cells["c"].dataset["name"] = "other"
    assert config_differences(cells) == {
        "c": "evaluated with another evaluation config than the other cells (differs in: data set other test)"}


def test_only_an_attribute_error_in_picklers_words_names_missing_code() -> None:
    words = "Can't get attribute 'Net' on <module 'models' from 'models.py'>"
    assert _missing_code(AttributeError(words)) == "module 'models' defines no 'Net'"
    assert _missing_code(RuntimeError(words)) is None
    assert _missing_code(AttributeError(f"while loading: {words}")) is None


def test_another_config_is_not_also_told_other_attack_settings() -> None:
    old = make_record([make_result("pgd", [1, 0], eps=0.1)])
    old.results[0].settings = {"steps": 40}
    assert differences(old, config_hash=old.config_hash, state_sha256=None, settings={"pgd": {"steps": 100}}) == (
        "holds a record of other attack settings (pgd: steps 40 → 100; this version's attack defaults changed)")
    assert differences(old, config_hash="0" * 64, state_sha256=None, settings={"pgd": {"steps": 100}}) == (
        "holds a record of another config")


def test_two_records_on_one_cell_of_one_config_hashed_at_two_paths_are_not_told_two_configs() -> None:
    first, second = grid_records()[0], grid_records()[0]
    for rec, path in ((first, "/one/a.npz"), (second, "/two/a.npz")):
        rec.config = {"seed": 0, "dataset": {"file": path, "sha256": "cd" * 32}}
        rec.config_hash = config_digest(rec.config, located=True)
    with pytest.raises(ConfigError, match="both sit at") as caught:
        build_matrices([first, second])
    assert "different evaluation configs" not in str(caught.value)
