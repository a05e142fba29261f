"""Units of the paired comparison's noise rows (audit 49): the table's header says ``diff (points)`` and ``McNemar
p``, which the accuracy rows hold, but a noise row's diff is a mean difference in correct answers per sample and its
p the exact sign test. A reader of the table alone read ``+2.83`` as points; the noise row now names its own units in
its cells (``+2.83/sample``, ``sign < 1e-6``) in every format the paired table renders, and its legend says so."""

from __future__ import annotations

from kwta_robust.formats import render_stdout, render_table
from kwta_robust.html_records import paired_section
from kwta_robust.narrow import narrow_markdown
from kwta_robust.paired import NOISE_LEGEND, paired_table
from kwta_robust.report import cell_text
from test_paired_noise import records


def test_the_noise_row_carries_its_units_and_the_accuracy_rows_keep_the_headers() -> None:
    table = paired_table(records())
    assert table.headers[3] == "diff (points)" and table.headers[-1] == "McNemar p"
    clean, noise = ([cell_text(c) for c in row] for row in table.rows)
    assert noise[3] == "+0.25/sample" and noise[-1] == "sign 0.25"
    assert not clean[3].endswith("/sample") and not clean[-1].startswith("sign")  # points and McNemar, as headed
    legend = " ".join(NOISE_LEGEND.split())
    assert "its cell ends in /sample" in legend and "its cell starts with sign" in legend


def test_every_format_of_the_paired_table_shows_the_noise_rows_units() -> None:
    recs = records()
    for text in (render_table(paired_table(recs), "md"), narrow_markdown(recs), render_stdout(recs, "wide"),
                 render_stdout(recs, "latex"), str(paired_section(recs).body)):
        assert "+0.25/sample" in text and "sign 0.25" in text
