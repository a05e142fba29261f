"""The HTML report's noise table gives the score per image and level in %, as the notes and the tables do (it showed
the record's raw fraction, ``0.6995454545454546``, under "normalized score")."""

from __future__ import annotations

import re
from pathlib import Path

from html_helpers import parse_page, quickstart_records
from kwta_robust.html_report import write_report
from kwta_robust.numbers import percent_text


def test_noise_table_gives_the_score_per_image_and_level_in_percent(tmp_path: Path) -> None:
    records = quickstart_records()
    page = write_report(tmp_path / "report.html", records)
    text = parse_page(page.read_text()).text
    assert "per image and level %" in text and "normalized score" not in text
    for rec in records:
        fraction = rec.noise[0].result["noise_score_normalized"]
        assert 0 < fraction < 1
        assert percent_text(fraction) in text  # e.g. 70.0
        assert not re.search(re.escape(repr(fraction)), text)  # the raw fraction is gone
