"""Mutation review (session 47) of the config hash that names the data by content and of the notes that name a
data file: each test kills a mutant of kwta_robust/config_digest.py or comparability.py that the tests before let
survive."""

from __future__ import annotations

from eval_helpers import make_record
from kwta_robust.comparability import data_set_text, same_samples
from kwta_robust.config_digest import config_digest, without_location
from kwta_robust.record_diff import record_differences

SHA = "ab" * 32


def test_an_unlocated_data_file_keeps_its_file_key_as_null_so_stored_hashes_stay_valid() -> None:
    config = {"seed": 0, "dataset": {"file": "/data/a/digits.npz", "sha256": SHA}}
    unlocated = {"seed": 0, "dataset": {"file": None, "sha256": SHA}}
    assert without_location(config) == unlocated  # set to None, as documented: not dropped
    assert config_digest(config) == config_digest(unlocated, located=True)  # the digest records of today hold


def _on_file(file: object, name: object) -> object:
    rec = make_record(n=4)
    rec.config = {"seed": 0, "dataset": {"file": file, "sha256": SHA}}
    rec.dataset["name"] = name
    return rec


def test_a_data_file_is_named_by_its_config_path_first_then_by_the_data_set_name() -> None:
    assert data_set_text(_on_file("/data/a/digits.npz", "copy.npz")) == "digits.npz (sha256 abababababab)"
    assert data_set_text(_on_file(None, "/data/b/moved.npz")) == "moved.npz (sha256 abababababab)"


def test_a_data_file_with_no_path_anywhere_is_a_data_file() -> None:
    assert data_set_text(_on_file(None, None)) == "data file (sha256 abababababab)"
    assert data_set_text(_on_file(None, 7)) == "data file (sha256 abababababab)"  # no text to take a name from


def test_the_same_indices_of_two_data_sets_are_not_the_same_samples() -> None:
    a, b = make_record(n=4), make_record(n=4)
    b.dataset["name"] = "other"
    assert not same_samples(a, b)
    b.dataset["name"] = a.dataset["name"]
    assert same_samples(a, b)


def _stored(path: str, located: bool) -> dict:
    config = {"seed": 0, "dataset": {"file": path, "sha256": SHA}}
    return {"config": config, "config_hash": config_digest(config, located=located),
            "dataset": {"name": path, "split": "test", "n": 4}}


def test_diff_pairs_one_data_file_hashed_at_two_paths_before_2026_12_07_with_one_hashed_today() -> None:
    before, today = _stored("/one/a.npz", located=True), _stored("/two/a.npz", located=False)
    assert before["config_hash"] != today["config_hash"]
    assert record_differences(before, today) == []  # nor the path, nor the config hash of the path
    edited = record_differences(before, _stored("/one/a.npz", located=True) | {"config_hash": "0" * 64})
    assert [d.split(":")[0] for d in edited] == ["config_hash"]  # today's hash of the config, and a hash of none
    assert edited[0].startswith(f"config_hash: '{config_digest(before['config'])[:40]}")


def test_diff_keeps_the_path_of_a_data_file_not_yet_pinned_which_names_its_data() -> None:
    a, b = _stored("/one/a.npz", located=False), _stored("/two/b.npz", located=False)
    for record in (a, b):
        record["config"]["dataset"]["sha256"] = None
        record["config_hash"] = config_digest(record["config"])
    assert sorted(d.split(":")[0] for d in record_differences(a, b)) == [
        "config.dataset.file", "config_hash", "dataset.name"]


def test_diff_of_records_whose_dataset_is_no_object_lists_it_and_does_not_crash() -> None:
    a, b = _stored("/one/a.npz", located=False), _stored("/two/a.npz", located=False)
    a["dataset"] = None  # a damaged record, as json.load gives it
    assert [d.split(":")[0] for d in record_differences(a, b)] == ["dataset"]
