"""The score per image and level's 95% interval in % (small49 item 2): the Markdown notes round it outward since
units 49 (``70.0% (66.6–73.3)`` for the bounds 66.69% and 73.21%), while the HTML noise table, the sweep heatmap's
cell and tooltip, and the matrices' long table (Markdown, HTML, LaTeX) still rounded it to nearest (``66.7–73.2``):
one interval read as two. Every rendering now rounds it outward, the lower bound down and the upper bound up."""

from __future__ import annotations

import re

from html_helpers import quickstart_records
from kwta_robust.formats.latex import to_latex
from kwta_robust.formats.md import to_markdown
from kwta_robust.html_report import build_report
from kwta_robust.html_sweep import _heatmap
from kwta_robust.matrix import build_matrices, long_table
from kwta_robust.noise_notes import noise_score_notes
from kwta_robust.report import cell_text

#: The quickstart fixture's score per image and level with its interval as the notes write it (rounded outward).
EXPECTED = {"kwta": ("70.0", "66.6", "73.3"), "relu": ("44.6", "40.3", "48.8")}


def test_the_html_noise_table_rounds_the_per_image_interval_outward_as_the_notes() -> None:
    records = quickstart_records()
    note, = [n for n in noise_score_notes(records) if n.startswith("noise score:")]
    assert all(f"{label} {value}% ({low}–{high})" in note for label, (value, low, high) in EXPECTED.items())
    html = build_report(records)
    noise = html[html.index('<section id="noise">'):]
    rows = re.findall(r"<tr>(.*?)</tr>", noise[:noise.index("</section>")].split("<tbody>", 1)[1])
    cells = {re.findall(r"<td[^>]*>(.*?)</td>", row)[0]: re.findall(r"<td[^>]*>(.*?)</td>", row)[6] for row in rows}
    assert cells == {label: f"{value} ({low}–{high})" for label, (value, low, high) in EXPECTED.items()}


def test_the_noise_heatmap_and_the_long_table_round_it_outward() -> None:
    matrix, = [m for m in build_matrices(quickstart_records(), title="") if m.noise]
    svg = _heatmap(matrix)
    for label, (value, low, high) in EXPECTED.items():
        assert f"{label}: noise score " in svg and f"{value}% [{low}, {high}] per image and level" in svg
        assert svg.count(f"[{low}, {high}]") == 2  # the cell's second line and its tooltip
    table = long_table([matrix])
    accuracy = table.headers.index("accuracy")
    shown = {row[table.headers.index("record")].value: cell_text(row[accuracy]) for row in table.rows}
    assert shown == {label: f"{value} ({low}–{high})" for label, (value, low, high) in EXPECTED.items()}
    markdown, latex = to_markdown(table), to_latex(table)
    for value, low, high in EXPECTED.values():
        assert f"| {value} ({low}–{high}) |" in markdown
        assert rf"{value}\,{{\scriptsize[{low}, {high}]}}" in latex
    assert "66.7" not in markdown + latex + svg and "73.2" not in markdown + latex + svg  # the nearest rounding
