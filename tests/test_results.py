"""EvalRecord: Wilson intervals, JSON round trip (numbers stay numbers), atomic writes, schema checks."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.results import (
    SCHEMA_VERSION,
    Accuracy,
    NoiseResult,
    RecordError,
    atomic_write_text,
    load_record,
    save_record,
    wilson_interval,
)


def test_wilson_interval_matches_its_formula_and_edges() -> None:
    # independent reference: SciPy's Wilson score interval
    from scipy.stats import binomtest

    for k, n in [(30, 40), (3, 200), (117, 120)]:
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = wilson_interval(k, n)
        assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)
    lo0, hi0 = wilson_interval(0, 50)
    assert lo0 == 0.0 and 0 < hi0 < 0.1
    lo1, hi1 = wilson_interval(50, 50)
    assert hi1 == 1.0 and 0.9 < lo1 < 1
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_round_trip_keeps_numbers_as_numbers(tmp_path: Path) -> None:
    rec = make_record([make_result("pgd", [1, 0, 1, -1], eps=8 / 255)], clean_flags=[1, 1, 1, 0])
    rec.results[0].margins = [-0.5, 2.25, None, None]
    rec.noise.append(NoiseResult("numenta", [0.0, 0.1], 2, 7, {"noise_score": 5.5, "accuracy": [0.75, 0.6]}, 0.1))
    rec.clean = Accuracy.of(0, 0)  # NaN accuracy and interval must survive as JSON null
    rec.clean_margins = [-1.25, None, -1e-7, 3.0]
    path = tmp_path / "sub" / "rec.json"
    save_record(rec, path)
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    assert isinstance(raw["results"][0]["robust"]["accuracy"], float)
    assert raw["results"][0]["eps"] == pytest.approx(8 / 255)
    assert raw["results"][0]["eps_text"] == "8/255"
    assert raw["clean"]["accuracy"] is None
    back = load_record(path)
    assert back.results[0] == rec.results[0]
    assert back.worst_case == rec.worst_case
    assert back.noise == rec.noise
    assert math.isnan(back.clean.accuracy)
    assert back.noise_score() == 5.5
    assert back.clean_margins == [-1.25, None, -1e-7, 3.0] and raw["clean_margins"][1] is None
    assert back.results[0].margins == [-0.5, 2.25, None, None] and raw["results"][0]["margins"][2] is None
    del raw["clean_margins"], raw["results"][0]["margins"]  # a record written before margins were stored loads
    path.write_text(json.dumps(raw))
    assert load_record(path).clean_margins == [] and load_record(path).results[0].margins == []


def test_atomic_write_leaves_no_temp_files_and_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    atomic_write_text(target, "first")
    rec = make_record([make_result("pgd", [1, 0])])
    rec.model["bad"] = object()  # not JSON-serialisable: the write fails before replacing
    with pytest.raises(TypeError):
        save_record(rec, target)
    assert target.read_text() == "first"
    assert os.listdir(tmp_path) == ["r.json"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not valid JSON"),
        ('{"schema_version": 99}', "schema_version 99"),
        ("[1, 2]", "not an evaluation record"),
    ],
)
def test_load_rejects_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(RecordError, match=message):
        load_record(path)


def test_load_rejects_missing_and_unknown_fields(tmp_path: Path) -> None:
    data = make_record([make_result("pgd", [1, 0])]).to_dict()
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**data, "extra": 1}))
    with pytest.raises(RecordError, match="unknown record field 'extra'"):
        load_record(path)
    del data["clean"]
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="lacks field 'clean'"):
        load_record(path)
    with pytest.raises(RecordError, match="no such file"):
        load_record(tmp_path / "missing.json")


def test_lookups() -> None:
    a = make_result("pgd", [1, 0, 1], eps=0.1)
    b = make_result("bpda", [0, -1, 1], eps=0.1, position=1, kind="bpda")
    c = make_result("pgd", [0, 0, 1], eps=0.3)
    rec = make_record([c, b, a])
    assert rec.threat_points() == [("linf", 0.3), ("linf", 0.1)]
    assert [r.label for r in rec.results_at("linf", 0.1)] == ["pgd", "bpda"]
    assert rec.result("bpda", "linf", 0.1) is b
    assert rec.worst("linf", 0.1).robust.correct == 1
    rec.put_result(make_result("pgd", [1, 1, 1], eps=0.1))
    assert rec.result("pgd", "linf", 0.1).robust.correct == 3 and len(rec.results) == 3


def test_written_files_get_normal_permissions(tmp_path: Path) -> None:
    from kwta_robust.results import file_mode

    path = tmp_path / "r.json"
    save_record(make_record([make_result("pgd", [1, 0])]), path)
    assert path.stat().st_mode & 0o777 == file_mode()


def test_schema_1_records_still_load(tmp_path: Path) -> None:
    """Records written before the layer probe (no ``detection``, no ``bpda_layers``) load and render."""
    from kwta_robust.formats.md import to_markdown
    from kwta_robust.report import detail_table

    raw = make_record([make_result("bpda", [1, 0, 1], kind="bpda")]).to_dict()
    raw["schema_version"] = 1
    del raw["detection"]
    for result in raw["results"]:
        del result["bpda_layers"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(raw))
    old = load_record(path)
    assert old.schema_version == 1 and old.detection == {} and old.results[0].bpda_layers is None
    assert "acted on" not in to_markdown(detail_table(old))
