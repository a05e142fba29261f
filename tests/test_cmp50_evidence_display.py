"""The HTML report's diagnostics section shows each flag's evidence: its fractions were written with six
significant digits (``0.541667``, ``0.45`` from ``0.4500000001`` only by luck of the digits, ``0.123457``); now as
the tables write numbers (4 significant digits), while the record keeps every digit."""

from __future__ import annotations

import math
import re

from eval_helpers import make_record, make_result
from kwta_robust.html_report import build_report
from kwta_robust.results import Flag


def test_flag_evidence_fractions_are_rounded_for_display_and_kept_in_the_record() -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 1], eps=0.1)], label="tiny")
    evidence = {"reference": "pgd", "points": [{"eps": 0.3, "n": 24, "reference_accuracy": 0.5416666666666666,
                                                "attack_accuracy": 0.1234567891}],
                "share": 0.4500000001, "broken_indices": [3, 5], "spread": math.nan, "strict": True}
    record.diagnostics = [Flag("adaptive-beats-pgd", "critical", "bpda beats pgd", evidence)]
    page = build_report([record])
    section = page[page.index("bpda beats pgd"):]
    cells = re.findall(r"<td>([^<]*)</td>", section)
    assert "0.5417" in cells and "0.1235" in cells and "0.45" in cells
    assert not any(re.fullmatch(r"0\.\d{5,}", c) for c in cells), cells  # no fraction with more digits
    assert "3, 5" in cells and "24" in cells and "0.3" in cells and "true" in cells
    assert record.diagnostics[0].evidence["points"][0]["reference_accuracy"] == 0.5416666666666666  # kept
    assert record.diagnostics[0].evidence["share"] == 0.4500000001
