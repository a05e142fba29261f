"""Record-reading leftovers of the record-fuzzing round: a resumed ``--out`` record cut short was called "not a
kwta-robust record" (now: cut short, with the fix, and the file kept as it was or set aside); a text cut inside a
number (``0.``) was a "delimiter at line 54" to the loader; ``diff`` read each file twice; a negative or infinite
``wall_time_s``, a negative ``position`` and a seed past 2**63 rendered as written (now one line naming the field)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.record_diff import differences
from kwta_robust.errors import ConfigError
from kwta_robust.results import RecordError, load_record, save_record
from kwta_robust.resume import StalePolicy, resumable_record
from test_bad_inputs import one_error


def _saved(tmp_path: Path, flags: tuple[int, ...] = (1, 0, 1), name: str = "rec.json") -> tuple[Path, str]:
    path = tmp_path / name
    save_record(make_record([make_result("pgd", list(flags))]), path)
    return path, path.read_text()


def test_a_resumed_record_cut_short_is_said_so_and_kept(tmp_path: Path) -> None:
    path, text = _saved(tmp_path)
    fresh = load_record(path)
    cut = text[: text.index('"ci_high": ') + len('"ci_high": 0.')]  # a copy killed inside a number
    path.write_text(cut)
    expected = (f"--out: {path} was cut short (not valid JSON: Expecting ',' delimiter: the text ends before the "
                "record does; a killed copy or a full disk?) and nothing was written to it; restore it from a copy "
                "to resume it, or use another --out or move the file away to start afresh")
    for resume in (True, False):  # --no-resume never overwrites a file that is no whole record either
        with pytest.raises(ConfigError) as info:
            resumable_record(path, fresh, StalePolicy(), resume=resume)
        assert str(info.value) == expected
        assert path.read_text() == cut
    assert resumable_record(path, fresh, StalePolicy(set_aside=True)) is None  # the quickstart sets it aside
    assert not path.exists() and (tmp_path / "superseded" / "rec.unreadable.json").read_text() == cut


def test_the_loader_says_cut_short_for_a_text_cut_inside_a_number(tmp_path: Path) -> None:
    path, text = _saved(tmp_path)
    path.write_text(text[: text.index('"ci_high": ') + len('"ci_high": 0.')])
    with pytest.raises(RecordError, match=r"is not valid JSON \(Expecting ',' delimiter: the text ends before the "
                                          r"record does, so the file was cut short; restore it from a copy"):
        load_record(path)


def test_diff_reads_each_record_once_with_the_same_output(tmp_path: Path, capsys, monkeypatch) -> None:
    a, _ = _saved(tmp_path, (1, 0, 1), "a.json")
    b, _ = _saved(tmp_path, (1, 1, 1), "b.json")
    reads: list[str] = []
    read_text, open_ = Path.read_text, builtins.open
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self.name) or read_text(self, *a, **k))
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: reads.append(Path(f).name) or open_(f, *a, **k))
    assert main(["diff", str(a), str(b)]) == 1
    monkeypatch.undo()
    out = capsys.readouterr().out.splitlines()
    assert sorted(r for r in reads if r.endswith(".json")) == ["a.json", "b.json"]
    # the same output as a diff of the two files parsed here by json (no provenance cause to append: same machine)
    found = differences(json.loads(a.read_text()), json.loads(b.read_text()))  # each line with its words
    assert out == [f"{len(found)} field(s) differ:", *(f"  {difference.labelled}" for difference in found)]
    assert "  results[0].flags[1] (pgd, Linf 0.3; sample 1, data set id 1): 0 != 1" in out  # worked by hand: the
    assert "  worst_case[0].first_broken_by[1] (Linf 0.3; sample 1, data set id 1): 0 != -1" in out  # second sample


@pytest.mark.parametrize("field, value, expected", [
    ("wall_time_s", -5.0, "must be a finite number >= 0 (null in the file: not measured), got -5.0"),
    ("wall_time_s", "1e400", "must be a finite number >= 0 (null in the file: not measured), got inf"),
    ("position", -3, "must be an integer >= 0, got -3"),
    ("seed", 2**63, "must be an integer in [0, 9223372036854775807], got 9223372036854775808"),
    ("seed", -1, "must be an integer in [0, 9223372036854775807], got -1"),
])
def test_a_result_field_no_evaluation_writes_is_refused_at_load(tmp_path: Path, capsys, field: str, value: object,
                                                               expected: str) -> None:
    path, text = _saved(tmp_path)
    data = json.loads(text)
    data["results"][0][field] = "@@" if value == "1e400" else value
    path.write_text(json.dumps(data).replace('"@@"', "1e400"))
    assert one_error(capsys, ["table", str(path)]) == f"error: {path}: results[0].{field} {expected}"


def test_what_an_evaluation_writes_still_reads(tmp_path: Path, capsys) -> None:
    """``null`` wall time ("not measured"), the first position (0) and the largest seed a config takes."""
    path, text = _saved(tmp_path)
    data = json.loads(text)
    data["results"][0].update(wall_time_s=None, position=0, seed=2**63 - 1)
    path.write_text(json.dumps(data))
    assert main(["table", str(path)]) == 0 and "pgd" in capsys.readouterr().out
    record = load_record(path)
    assert record.results[0].seed == 2**63 - 1 and record.results[0].position == 0


def test_a_negative_noise_probe_wall_time_is_refused_at_load(tmp_path: Path, capsys) -> None:
    data = json.loads((Path(__file__).parent / "fixtures" / "quickstart" / "kwta.json").read_text())
    path = tmp_path / "kwta.json"
    path.write_text(json.dumps(data))
    assert main(["table", str(path)]) == 0  # the shipped record reads
    capsys.readouterr()
    data["noise"][0]["wall_time_s"] = -1.5
    path.write_text(json.dumps(data))
    assert one_error(capsys, ["table", str(path)]) == (f"error: {path}: noise[0].wall_time_s must be a finite number "
                                                       ">= 0, got -1.5")
