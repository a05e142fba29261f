"""kwta_robust.record_json: the bytes of the standard library's indented JSON, and each unit encoded once per run."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from eval_helpers import make_record, make_result
from kwta_robust import record_json
from kwta_robust.record_json import RecordEncoder, dumps, plain
from kwta_robust.results import Accuracy, EvalRecord, NoiseResult, WorstCase, save_record


def _nan_to_none(value: Any) -> Any:
    """What ``EvalRecord.to_dict`` did before (after ``dataclasses.asdict``): the reference."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def _reference(record: EvalRecord) -> str:
    """The record's text as ``save_record`` wrote it before :mod:`kwta_robust.record_json`."""
    return json.dumps(_nan_to_none(dataclasses.asdict(record)), indent=1, allow_nan=False) + "\n"


def _big_record(n: int = 300, eps_count: int = 4, seed: int = 0) -> EvalRecord:
    rng = random.Random(seed)
    clean = [rng.choice([0, 1, 1]) for _ in range(n)]
    results = []
    for j in range(eps_count):
        flags = [rng.choice([0, 1]) if c else -1 for c in clean]
        r = make_result("pgd", flags, eps=0.01 * (j + 1))
        r.margins = [None if f == -1 else (rng.uniform(0, 3) if f == 0 else -rng.uniform(0, 3)) for f in flags]
        r.error_rates = [None if f == -1 else rng.choice([0.0, 1.0, float("nan")]) for f in flags]
        r.max_violation = float("nan") if j == 0 else 1e-300
        r.params = {"steps": 3, "nested": {"ünïcode": "x\n\"y\"", "list": [1, 2.5, None, True, "s"], "t": (1, 2)},
                    "empty": {}, "none": [], 4: "int key", 1.5: ["float key"], None: False}
        results.append(r)
    rec = make_record(results, clean_flags=clean)
    rec.worst_case.append(WorstCase("linf", 0.01, "0.01", ["pgd"], Accuracy.of(3, n),
                                    [rng.choice([-2, -1, 0]) for _ in range(n)]))
    rec.noise.append(NoiseResult("numenta", [0.0, 0.1], 2, 7, {"noise_score": 5.5, "counts": [[1, 2], [3, 4]],
                                                               "nan": float("inf")}, 0.1))
    rec.clean_margins = [-rng.random() if c else rng.random() for c in clean]
    rec.clean_margins[0] = float("nan")
    rec.provenance["deep"] = [[{"a": [[]]}], {"b": -0.0}, 1e16, 123456789012345678901234567890]
    return rec


def test_dumps_is_json_dumps_indent_1() -> None:
    values: list[Any] = [0, -1, 1.5, -0.0, 1e-300, 1e300, True, None, "é\u2028\"", [], {}, [[]], [{}], {"a": []},
                         [1, 2, 3], [1, [2, [3, {"x": None}]]], {"k": {"l": [1.0, None, "m"]}}, {1: 2, "a": 3},
                         (1, 2), [(1, 2), ["a"]], {"a": (None,)}]
    for value in values:
        for level in (0, 2):
            expected = json.dumps(value, indent=1, allow_nan=False).replace("\n", "\n" + " " * level)
            assert dumps(value, level) == expected, value


def test_dumps_refuses_nan_as_json_does() -> None:
    for bad in (float("nan"), [1.0, float("inf")], {"a": [float("-inf")]}):
        with pytest.raises(ValueError):
            json.dumps(bad, indent=1, allow_nan=False)
        with pytest.raises(ValueError):
            dumps(bad)
    with pytest.raises(TypeError):
        dumps({(1, 2): 3})


def test_plain_is_asdict_with_nan_as_null() -> None:
    rec = _big_record()
    assert plain(rec) == _nan_to_none(dataclasses.asdict(rec))
    assert rec.to_dict() == _nan_to_none(dataclasses.asdict(rec))
    inner = {"x": [1]}
    rec.provenance["inner"] = inner
    out = plain(rec)
    assert out["provenance"]["inner"] == inner and out["provenance"]["inner"] is not inner  # a copy, as asdict


def test_save_record_writes_the_old_bytes(tmp_path: Path) -> None:
    rec = _big_record()
    save_record(rec, tmp_path / "r.json")
    assert (tmp_path / "r.json").read_text() == _reference(rec)


def test_encoder_encodes_each_unit_once_and_follows_changes(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """The runner saves after every unit: each save encodes the new unit and the small fields, never the units saved
    before (the old save re-encoded the whole record: O(units² · n) over a run)."""
    full = _big_record(n=200, eps_count=6)
    rec = make_record([], n=200, clean_flags=full.clean_flags)
    rec.clean_margins = full.clean_margins
    encoded: list[Any] = []
    real_plain = record_json.plain
    monkeypatch.setattr(record_json, "plain", lambda v: (encoded.append(v), real_plain(v))[1])
    encoder = RecordEncoder()
    for i, result in enumerate(full.results):
        rec.put_result(result)
        encoded.clear()
        save_record(rec, tmp_path / "r.json", encoder)
        assert (tmp_path / "r.json").read_text() == _reference(rec)
        units = [v for v in encoded if isinstance(v, type(result))]
        assert units == [result], i  # only the new unit
    replaced = dataclasses.replace(full.results[2], flags=[-1] * 200, margins=[], error_rates=[])
    rec.put_result(replaced)  # a unit replaced (re-run): its new text, the old one dropped
    rec.noise.append(full.noise[0])
    rec.worst_case = list(full.worst_case)
    assert encoder.encode(rec) + "\n" == _reference(rec)
    rec.results.pop(0)
    assert encoder.encode(rec) + "\n" == _reference(rec)
