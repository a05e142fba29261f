"""Persona walk 49: `kwta-robust table` of flagged records on a terminal split the overview into a model table and
a flags table; the flags wrapped onto a second line left a blank row under each flagged model in the model table
(``|                  |      |   |``), which reads as a record with nothing in it."""

from __future__ import annotations

import re

from eval_helpers import make_record, make_result
from kwta_robust.narrow import aligned_markdown, overview_table
from kwta_robust.results import Flag

CODES = ["adaptive-beats-pgd", "budget-still-lowering", "selections-outside-layers", "bpda-no-layer"]
BLANK = re.compile(r"^\|(\s*\|)+$")


def _rows(block: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in block.splitlines()[2:]]


def test_continued_flag_lines_appear_only_in_the_table_that_holds_the_flags() -> None:
    records = [make_record([make_result("pgd", [1, 0, 1, 0])], label=f"kwta-sparsity-ratio-0.{i}-pruned-50")
               for i in (1, 3)]
    for rec in records:
        rec.diagnostics = [Flag(code, "warning", "m") for code in CODES]
    blocks = aligned_markdown(overview_table(records), 80).strip().split("\n\n")
    assert len(blocks) == 2 and all(len(line) <= 80 for line in "\n".join(blocks).splitlines())  # split in two
    model, flags = (_rows(block) for block in blocks)
    assert not [line for line in "\n".join(blocks).splitlines() if BLANK.match(line)]
    assert [row[0] for row in model] == [rec.label for rec in records]  # one line per record, none blank
    assert len(flags) > len(records)  # the flags did wrap: continued lines, each holding flag codes
    assert all(row[-1] for row in flags)
    shown = [code.strip() for row in flags for code in row[-1].split(",") if code.strip()]
    assert shown == CODES * 2
