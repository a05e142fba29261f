"""The HTML report read as a reviewer reads it (the quickstart's records): the headline quickstart.md begins with is
in the page's overview too; a flag badge says its severity in words, not by colour alone; the per-model robust
accuracy charts tell attacks apart by dash pattern as well as colour; a heatmap's `` !`` mark is explained under
it; the noise table gives the score per image and level with the interval quickstart.md gives, and the accuracy per
level with one decimal as every other percentage."""

from __future__ import annotations

import re
from pathlib import Path

from html_helpers import QUICKSTART, parse_page, quickstart_records
from kwta_robust.compare import write_comparison
from kwta_robust.html_report import build_report
from kwta_robust.html_sweep import records_as_sweep
from kwta_robust.quickstart import TITLE, headline
from kwta_robust.report import compare_table
from kwta_robust.svg import WORST_COLOUR


def section(html: str, key: str) -> str:
    """The markup of the page's section ``key`` (``<section id="key">`` to its end)."""
    start = html.index(f'<section id="{key}">')
    return html[start:html.index("</section>", start)]


def test_the_quickstart_headline_heads_the_html_overview_as_it_heads_the_markdown(tmp_path: Path) -> None:
    records = quickstart_records()
    notes = headline(records)
    assert len(notes) == 2 and all(" vs worst case " in n for n in notes)
    markdown, page = write_comparison(records, tmp_path, "quickstart", title=TITLE, notes=notes)
    md = markdown.read_text()
    overview = parse_page(section(page.read_text(), "overview")).text
    for note in notes:
        assert f"- {note}" in md
        assert note in overview, note  # it was in quickstart.md alone


def test_overview_badges_name_the_severity_in_words() -> None:
    records = quickstart_records()
    cards = section(build_report(records), "overview")
    badges = re.findall(r'<span class="badge (\w+)">([^<]*)</span>', cards)
    for rec in records:
        for f in rec.diagnostics:
            kind = f.severity if f.severity in ("critical", "warning") else "info"
            assert (kind, f"{kind}: {f.code}") in badges, (rec.label, f.code)
    assert ("info", "info: budget-checked") in badges and ("warning", "warning: bpda-no-layer") in badges


def test_each_models_chart_draws_its_attacks_in_distinct_dash_patterns() -> None:
    records = quickstart_records()
    curves = section(build_report(records), "curves")
    for rec in records:
        chart = re.search(rf'<svg [^>]*aria-label="{rec.label}: robust accuracy vs eps \(linf\)".*?</svg>', curves)
        assert chart is not None, rec.label
        lines = re.findall(r'<polyline [^>]*stroke="(#\w+)" stroke-width="[\d.]+"(?: stroke-dasharray="([^"]*)")?/>',
                           chart.group(0))
        attacks = [dash for stroke, dash in lines if stroke != WORST_COLOUR]
        assert len(attacks) == len({r.label for r in rec.results if r.label != "sanity-pgd"}) == 3, lines
        assert len(set(attacks)) == len(attacks), attacks  # all solid before: told apart by colour alone


def test_a_heatmaps_critical_flag_mark_is_explained_under_it() -> None:
    records = quickstart_records()
    assert any(f.severity == "critical" for rec in records for f in rec.diagnostics)
    html = build_report([], sweep=records_as_sweep(records, [QUICKSTART / "kwta.json", QUICKSTART / "relu.json"]))
    figures = re.findall(r"<figure>(<svg .*?</svg>)(.*?)</figure>", section(html, "sweep"))
    marked = [rest for svg, rest in figures if re.search(r">[\d.]+ !</text>", svg)]
    assert marked and len(marked) == sum(1 for _, rest in figures if "<figcaption>" in rest)
    for rest in marked:
        caption = re.search(r"<figcaption>(.*?)</figcaption>", rest)
        assert caption is not None and caption.group(1).startswith("! = critical diagnostics flags")


def test_noise_table_gives_the_markdowns_per_image_interval_and_one_decimal_per_level() -> None:
    records = quickstart_records()
    note = next(n for n in compare_table(records).notes if "per image and level:" in n)
    noise = section(build_report(records), "noise")
    rows = re.findall(r"<tr>(.*?)</tr>", noise.split("<tbody>", 1)[1])
    assert len(rows) == len(records)
    for rec, row in zip(records, rows):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[0] == rec.label
        value, interval = re.search(rf"{rec.label} ([\d.]+)% \(([\d.]+–[\d.]+)\)", note).groups()
        assert cells[6] == f"{value} ({interval})"  # the score per image and level: 70.0 (66.7–73.2)
        per_level = cells[7].split("), ")
        assert len(per_level) == len(rec.noise[0].levels)
        assert all(re.fullmatch(r"\d+\.\d \(\d+\.\d–\d+\.\d\)?", p) for p in per_level), cells[7]  # was 94.00 (...)


def test_the_overview_says_what_a_critical_flag_means_and_where_its_evidence_is() -> None:
    records = quickstart_records()
    assert any(f.severity == "critical" for rec in records for f in rec.diagnostics)
    overview = section(build_report(records), "overview")
    assert '<a href="#diagnostics">Diagnostics</a>' in overview
    assert "A critical flag means the numbers of the attacks it names are not to be trusted" in overview
    assert "report the worst case" in overview
    for rec in records:
        rec.diagnostics = [f for f in rec.diagnostics if f.severity != "critical"]
    assert "A critical flag" not in section(build_report(records), "overview")  # said where a card shows one
