"""Records as JSON, the JSON walk and ``kwta-robust diff``: contracts the mutation-testing round found unguarded
(an infinite number in a per-sample list, one empty side of a replaced settings object, the width of a value in a
difference line, the cause of a null settings object, a provenance field whose name extends another's, the
volatile fields of a training run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust import record_diff
from kwta_robust.json_diff import ABSENT, json_differences
from kwta_robust.record_diff import cause, record_differences
from kwta_robust.record_json import plain
from kwta_robust.results import save_record


def test_infinite_numbers_in_a_per_sample_list_become_null(tmp_path: Path) -> None:
    """``plain``: non-finite floats as ``None`` -- infinities too, not only NaN (an infinite margin made the save
    fail: JSON has no Infinity)."""
    assert plain([1.5, float("inf"), float("-inf"), float("nan"), 2, None]) == [1.5, None, None, None, 2, None]
    assert plain((float("inf"), 0.5)) == [None, 0.5]
    result = make_result("pgd", [1, 0, -1, 1])
    result.margins = [-1.0, float("inf"), None, float("-inf")]
    record = make_record([result], clean_flags=[1, 1, 0, 1])
    save_record(record, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["margins"] == [-1.0, None, None, None]


def test_an_empty_object_against_a_full_one_is_one_difference_per_key() -> None:
    """``whole_disjoint``: only two NON-EMPTY objects without a common key are one difference; an empty one against
    a full one is a difference per key (the settings gained keys, they were not replaced)."""
    found = list(json_differences({"s": {}}, {"s": {"steps": 3, "rho": 0.5}}, whole_disjoint=True))
    assert found == [("s.steps", ABSENT, 3), ("s.rho", ABSENT, 0.5)]
    found = list(json_differences({"s": {"eps": 1}}, {"s": {}}, whole_disjoint=True))
    assert found == [("s.eps", 1, ABSENT)]
    found = list(json_differences({"s": {"a": 1}}, {"s": {"b": 2}}, whole_disjoint=True))
    assert found == [("s", {"a": 1}, {"b": 2})]


@pytest.mark.parametrize(("length", "shown"), [
    (58, "'" + "a" * 58 + "'"),  # repr of 60 characters: whole
    (59, "'" + "a" * 56 + "..."),  # 61: cut to 57 characters and "...", 60 in all
    (200, "'" + "a" * 56 + "..."),
])
def test_a_value_in_a_difference_line_is_at_most_60_characters(length: int, shown: str) -> None:
    found = record_differences({"x": "a" * length}, {"x": 1})
    assert found == [f"x: {shown} != 1"]
    assert len(shown) == min(length + 2, 60)


def test_a_null_settings_object_is_explained_on_either_side() -> None:
    """A record resumed or re-saved before settings were stored has ``settings: null``; its difference is
    explained whichever record is the older one."""
    old = "one record was written before attack settings were stored: compare their params"
    assert cause("results[0].settings: None != {'steps': 3}") == old
    assert cause("results[2].settings: {'steps': 3} != None") == old
    assert cause("sanity[1].settings: only in the second") == old
    assert cause("results[0].settings.steps: 3 != 5") == record_diff.CAUSES["results[].settings"]


@pytest.mark.parametrize(("difference", "key"), [
    ("provenance.device_name: 'AMD' != 'Intel'", "provenance.device_name"),
    ("provenance.device: 'cpu' != 'cuda'", "provenance.device"),
    ("provenance.versions.torch: '2.1' != '2.2'", "provenance.versions"),
    ("provenance.resumed_on[1]: 'cpu' != 'cuda'", "provenance.resumed_on"),
])
def test_each_provenance_field_gets_its_own_cause(difference: str, key: str) -> None:
    """``provenance.device`` is a prefix of ``provenance.device_name``'s text, not of its path: each field its own
    cause (a key below it, ``.``, or an item, ``[``)."""
    assert cause(difference) == record_diff.CAUSES[key]
    assert cause("provenance.devices: 1 != 2") is None
    assert cause("config_hash_old: 'a' != 'b'") is None


def test_a_retrained_checkpoints_volatile_fields_are_no_difference() -> None:
    """The training's wall time (``train_seconds``) and output folder of a checkpoint trained afresh differ between
    identical runs; its weights (``state_sha256``) and settings are compared."""
    def record(seconds: float, out: str, sha: str, lr: float) -> dict:
        return {"model": {"state_sha256": sha, "training": {"train_seconds": seconds,
                                                            "training": {"out": out, "lr": lr}}}}

    assert record_differences(record(1.0, "/tmp/a", "s", 0.1), record(2.5, "/tmp/b", "s", 0.1)) == []
    assert record_differences(record(1.0, "/tmp/a", "s", 0.1), record(2.5, "/tmp/b", "t", 0.2)) == [
        "model.state_sha256: 's' != 't'", "model.training.training.lr: 0.1 != 0.2"]


def test_a_volatile_path_with_a_list_index_matches_every_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """``VOLATILE_PATHS``: ``[]`` stands for any list index (the module's contract), at any depth."""
    monkeypatch.setattr(record_diff, "VOLATILE_PATHS", frozenset({"results[].host", "a[].b[].c"}))
    a = {"results": [{"host": "x", "n": 1}, {"host": "y", "n": 2}], "a": [{"b": [{"c": 1, "d": 1}]}]}
    b = {"results": [{"host": "z", "n": 1}, {"host": "w", "n": 3}], "a": [{"b": [{"c": 2, "d": 2}]}]}
    assert record_differences(a, b) == ["results[1].n: 2 != 3", "a[0].b[0].d: 1 != 2"]
