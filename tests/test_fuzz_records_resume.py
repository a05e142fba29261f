"""Resuming a record whose fields were hand-edited to the wrong type: a quoted accuracy, a ``true`` flag, a digest
of the samples that is a number. Before, the loader read ``"0.5625"`` and ``true`` as numbers and the run resumed on
them (writing them back as numbers); a numeric ``dataset.samples_sha256`` passed the record checks and was only
worded among resume's differences. Now each is refused where the record is read, naming the field, the file left as
it was."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from test_resume_fuzz import CANNOT, complete, partial, pgd, refused_resume  # noqa: F401 (complete: a fixture)

MISTYPED: list[tuple[str, Callable[[dict], None], str]] = [
    ("accuracy as text", lambda r: pgd(r)["robust"].update(accuracy=str(pgd(r)["robust"]["accuracy"])),
     "results[0].robust.accuracy must be a number or null, got '{value}'"),
    ("clean flag true", lambda r: r["clean_flags"].__setitem__(0, True), "clean_flags[0] must be an integer, got True"),
    ("samples digest a number", lambda r: r["dataset"].update(samples_sha256=5),
     "dataset.samples_sha256 must be a string or null, got 5"),
]


@pytest.mark.parametrize(("name", "damage", "why"), MISTYPED, ids=[m[0] for m in MISTYPED])
def test_a_mistyped_field_is_not_resumed(complete: dict, tmp_path: Path, name: str,  # noqa: F811
                                         damage: Callable[[dict], None], why: str) -> None:
    record = partial(complete["record"])
    assert record["clean_flags"][0] == 1  # the sample a flag of true stands in for was right clean
    value = pgd(record)["robust"]["accuracy"]
    damage(record)
    out = tmp_path / "r.json"
    assert refused_resume(complete, record, out) == f"--out: {out} " + CANNOT.format(path=out,
                                                                                     why=why.format(value=value))
