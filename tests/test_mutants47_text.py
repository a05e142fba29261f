"""Mutation review (session 47) of the terminal tables (kwta_robust/narrow.py): the overview's flags column is
wrapped, not cut (``Table.wrap_columns``), and the narrow notes say which layers BPDA acted on, which no test
pinned."""

from __future__ import annotations

from eval_helpers import make_record, make_result
from kwta_robust.narrow import aligned_markdown, narrow_notes, overview_table
from kwta_robust.results import Flag

CODES = ["selections-outside-layers", "bpda-no-layer", "gradient-masking-suspected", "noise-score-high",
         "transfer-beats-whitebox", "sanity-attack-failed", "clean-accuracy-low"]


def test_every_flag_code_of_the_overview_is_shown_whole_on_the_lines_below_its_row() -> None:
    flagged, plain = (make_record([make_result("pgd", [1, 0, 1, 0])], label=name) for name in ("kwta", "relu"))
    flagged.diagnostics = [Flag(code, "warning", "m") for code in CODES] + [Flag("info-note", "info", "m")]
    lines = aligned_markdown(overview_table([flagged, plain]), 120).splitlines()
    assert all(len(line) <= 120 for line in lines) and "…" not in "\n".join(lines)
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    flags = [row[-1] for row in cells]
    assert ", ".join(flags[:-1]).replace(",,", ",") == ", ".join(CODES + ["(info-note)"])  # each code whole, in order
    assert len(flags) > 2 and [row[0] for row in cells] == ["kwta"] + [""] * (len(flags) - 2) + ["relu"]
    assert all(set(row[1:-1]) == {""} for row in cells[1:-1])  # the continued lines hold the flags alone
    assert flags[-1] == "none"


def test_the_narrow_notes_say_which_layers_bpda_acted_on() -> None:
    record = make_record([make_result("bpda", [1, 0, 1, 0])], label="kwta")
    record.results[0].bpda_layers = {"features.1": "gate"}
    notes = narrow_notes([record])
    assert any(note.startswith("bpda acted on: features.1") for note in notes), notes
