"""A record file whose text is not JSON: cut short (a killed copy, a full disk), empty, saved with a UTF-8
byte-order mark, or broken mid-file. Before, each was ``is not valid JSON (Expecting value)``: neither where nor
why nor what to do; now the message says the file was cut short (or is empty, or has the mark), or the line and
column where it breaks, with the fix, and the commands exit 2 writing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.results import RecordError, load_record, save_record

FIX = "restore it from a copy or re-run the evaluation that wrote it"


def _text(tmp_path: Path) -> str:
    save_record(make_record([make_result("pgd", [1, 0, 1])]), tmp_path / "base.json")
    return (tmp_path / "base.json").read_text()


CASES = {
    "cut in a number": (lambda t: t[: t.index('"accuracy": ') + len('"accuracy": ')],
                        f"Expecting value: the text ends before the record does, so the file was cut short; {FIX}"),
    "cut in a string": (lambda t: t[: t.index('"label": ') + len('"label": "mo')],
                        "Unterminated string starting at: the text ends before the record does, so the file was cut "
                        f"short; {FIX}"),
    "cut after a comma": (lambda t: t[: t.index(",") + 1],  # no space after it: the error is at the text's very end
                          "Expecting property name enclosed in double quotes: the text ends before the record does, "
                          f"so the file was cut short; {FIX}"),
    "empty": (lambda t: "", f"the file is empty; {FIX}"),
    "byte-order mark": (lambda t: "\ufeff" + t, "it starts with a UTF-8 byte-order mark; save it as UTF-8 without one"),
    "broken on line 3": (lambda t: t.replace('"status"', "status", 1),
                         f"Expecting property name enclosed in double quotes at line 3 column 2; correct it there, or "
                         f"{FIX}"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_broken_record_text_says_why_and_what_to_do(tmp_path: Path, capsys, name: str) -> None:
    change, why = CASES[name]
    path = tmp_path / "rec.json"
    path.write_text(change(_text(tmp_path)), encoding="utf-8")
    expected = f"record: {path} is not valid JSON ({why})"
    with pytest.raises(RecordError) as info:
        load_record(path)
    assert str(info.value) == expected
    out = tmp_path / "x.md"
    assert main(["report", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {expected}\n" and not out.exists()
