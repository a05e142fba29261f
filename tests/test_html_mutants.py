"""Mutation-round tests for the report rendering (:mod:`kwta_robust.svg`, :mod:`kwta_robust.html`,
:mod:`kwta_robust.html_report`, :mod:`kwta_robust.html_records`, :mod:`kwta_robust.plots`): every expected value
below is computed by hand from the chart geometry (see the comments), not read back from the code."""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib import colormaps

from eval_helpers import make_record, make_result
from kwta_robust.html import el, esc, simple_table, table_html, value_html
from kwta_robust.html_records import _eps_axis, _model_chart, provenance_section, worst_case_section
from kwta_robust.html_sweep import SweepRun, sweep_section
from kwta_robust.html_report import _subtitle, build_report, report_path_for
from kwta_robust.matrix import build_matrices
from kwta_robust.plots import heatmap_figure, line_colours, slug
from kwta_robust.report import Cell, Table
from kwta_robust import svg
from kwta_robust.svg import Axis, HeatCell, Point, Segment, Series, heat_colour, heatmap, line_chart, num, stacked_bars


def _texts(doc: str) -> list[str]:
    return re.findall(r">([^<>]*)</text>", doc)


# --- svg.num ------------------------------------------------------------------------------------------------
def test_num_keeps_two_decimals_and_writes_zero_plainly() -> None:
    assert num(180.41) == "180.41"
    assert num(10.50) == "10.5"
    assert num(100.0) == "100"
    assert num(-0.001) == "0"
    assert num(-1.25) == "-1.25"


# --- line chart geometry --------------------------------------------------------------------------------------
# title "t": one line, used_top = 15, top = 27; left = 52, plot_w = 600 - 52 - 16 = 532, plot_height = 230.
# x range 2..4: sx(2) = 52, sx(3) = 318, sx(4) = 584; sy(y) = 27 + (1 - y) * 230:
# sy(1) = 27, sy(.5) = 142, sy(.333) = 180.41, sy(.8) = 73, sy(.6) = 119, sy(.4) = 165; bottom = 257.
def _chart() -> str:
    long_name = "m" * 40
    first = Series("a<&>\"", [Point(4, 0.5, 0.4, 0.6, tip="p4"), Point(3, 0.333), Point(2, 1.0, 0.8, 1.0)],
                   colour="#123456")
    second = Series(long_name, [Point(3, 0.0)], colour="#654321", dash="6 3")
    axis = Axis("eps", [(2, "2"), (2.1, "2.1"), (3, "3"), (4, "4")])
    return line_chart([first, second], title="t", x_axis=axis)


def test_line_chart_maps_values_to_the_axes() -> None:
    doc = _chart()
    assert '<polyline points="52,27 318,180.41 584,142"' in doc
    assert '<circle cx="318" cy="180.41" r="3.2" fill="#123456">' in doc
    assert '<circle cx="584" cy="142" r="3.2" fill="#123456"><title>p4</title></circle>' in doc
    assert '<circle cx="318" cy="257" r="3.2" fill="#654321">' in doc  # y = 0 sits on the x axis


def test_line_chart_band_goes_up_along_high_and_back_along_low() -> None:
    assert '<polygon points="52,27 584,119 584,165 52,73" fill="#123456"' in _chart()


def test_line_chart_gridlines_and_ticks() -> None:
    doc = _chart()
    assert '<line x1="52" y1="142" x2="584" y2="142" stroke="#e3e3e3"/>' in doc  # the 50 % grid line
    assert '<line x1="52" y1="257" x2="584" y2="257" stroke="#888"/>' in doc  # the x axis
    assert '<line x1="78.6" y1="257" x2="78.6" y2="261" stroke="#888"/>' in doc  # tick 2.1: 52 + .05 * 532
    texts = _texts(doc)
    assert "2.1" not in texts  # 26.6 units after the label "2": it would overlap
    assert {"2", "3", "4"} <= set(texts)
    assert '<text x="318" y="273" text-anchor="middle" fill="#555">3</text>' in doc


def test_line_chart_legend_layout_truncation_and_escaping() -> None:
    doc = _chart()
    # two legend entries per row (532 // 210); row at bottom + 52 = 309, the second entry at 52 + 210 = 262
    assert '<line x1="52" y1="305" x2="70" y2="305" stroke="#123456" stroke-width="1.8"/>' in doc
    assert '<line x1="262" y1="305" x2="280" y2="305" stroke="#654321" stroke-width="1.8" stroke-dasharray="6 3"/>' \
        in doc
    assert f"<title>{'m' * 40}</title>" in doc
    assert f">{'m' * 31}…</text>" in doc
    assert "a&lt;&amp;&gt;&quot;" in doc and "a<&>" not in doc
    assert 'viewBox="0 0 600 325"' in doc  # height: 309 + one legend row of 16


def test_line_chart_single_point_series_draws_no_line_or_band() -> None:
    doc = line_chart([Series("s", [Point(1, 0.5, 0.4, 0.6)])], title="t", x_axis=Axis("x"))
    assert "<polyline" not in doc and "<polygon" not in doc
    # one x value: the range is [1, 2], so the point is at the left edge
    assert '<circle cx="52" cy="142"' in doc


# --- stacked bars ---------------------------------------------------------------------------------------------
# title "b": top = 15 + 14 = 29, left = 90, plot_w = 600 - 90 - 16 = 494, bars 26 high with a gap of 10.
def _bars() -> str:
    bars = [("A", [Segment("x", 1, "#aaaaaa"), Segment("y", 3, "#bbbbbb"), Segment("z", 0, "#cccccc")]),
            ("B", [Segment("x", 2, "#aaaaaa")])]
    return stacked_bars(bars, title="b", legend=[Segment("x", 0, "#aaaaaa")])


def test_stacked_bars_widths_are_shares_of_the_total() -> None:
    doc = _bars()
    assert '<rect x="90" y="29" width="123.5" height="26" fill="#aaaaaa"' in doc  # 1/4 of 494
    assert '<rect x="213.5" y="29" width="370.5" height="26" fill="#bbbbbb"' in doc  # 3/4, after the first
    assert '<rect x="90" y="65" width="494" height="26" fill="#aaaaaa"' in doc  # second bar: 29 + 26 + 10
    assert "#cccccc" not in doc  # a zero count draws nothing
    assert "<title>A: y: 3 of 4 (75.0%)</title>" in doc


def test_stacked_bars_write_counts_inside_wide_segments() -> None:
    doc = _bars()
    assert '<text x="151.75" y="46" text-anchor="middle" fill="#111">1</text>' in doc  # 90 + 123.5 / 2
    assert '<text x="398.75" y="46" text-anchor="middle" fill="#111">3</text>' in doc
    narrow = stacked_bars([("A", [Segment("x", 1, "#aaaaaa"), Segment("y", 99, "#bbbbbb")])], title="b", legend=[])
    assert ">1</text>" not in narrow  # 4.94 units wide: no room for the digit
    assert ">99</text>" in narrow


# --- heatmap --------------------------------------------------------------------------------------------------
# two columns: grid 208 x 46, width max(122 + 208 + 90, 520) = 520, left = (520 - 208 - 90 + 122) / 2 = 172,
# title "h": top = 29; the colour bar at 172 + 208 + 18 = 398, 100 high in 20 steps of 5.
def _heat() -> str:
    cells = [[HeatCell(0.6, "60.0", "[50, 70]", "tip<1>"), HeatCell(0.59, "59.0")]]
    return heatmap(cells, rows=["r"], columns=["c1", "c2"], title="h", x_label="x", y_label="y")


def test_heatmap_cells_positions_colours_and_ink() -> None:
    doc = _heat()
    assert f'<rect x="172" y="29" width="104" height="46" fill="{heat_colour(0.6)}"' in doc
    assert f'<rect x="276" y="29" width="104" height="46" fill="{heat_colour(0.59)}"' in doc
    assert '<text x="224" y="49" text-anchor="middle" fill="#111" font-weight="bold">60.0</text>' in doc
    assert '<text x="328" y="49" text-anchor="middle" fill="#fff" font-weight="bold">59.0</text>' in doc
    assert "<title>tip&lt;1&gt;</title>" in doc


def test_heatmap_colour_bar_runs_from_100_at_the_top() -> None:
    doc = _heat()
    assert f'<rect x="398" y="29" width="14" height="5.5" fill="{heat_colour(0.975)}"/>' in doc
    assert f'<rect x="398" y="124" width="14" height="5.5" fill="{heat_colour(0.025)}"/>' in doc
    assert heat_colour(0.975) != heat_colour(0.025)


def test_heat_colour_is_viridis_clamped_to_0_1() -> None:
    r, g, b, _ = colormaps["viridis"](1.0)
    assert heat_colour(1.0) == f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"
    assert heat_colour(1.7) == heat_colour(1.0)
    assert heat_colour(-0.5) == heat_colour(0.0)


def test_svg_esc_escapes_quotes() -> None:
    assert svg.esc("<&>\"'") == "&lt;&amp;&gt;&quot;&#x27;"


# --- html building blocks -------------------------------------------------------------------------------------
def test_el_attributes() -> None:
    assert el("a", "x", title="a\"b'") == "<a title=\"a&quot;b&#x27;\">x</a>"
    assert el("input", disabled=False, hidden=None) == "<input></input>"
    assert el("input", disabled=True) == "<input disabled></input>"
    assert el("td", data_row=1, class_="c") == '<td data-row="1" class="c"></td>'
    assert esc("'") == "&#x27;"


def test_value_html_folds_after_24_values() -> None:
    assert value_html(list(range(24))) == ", ".join(str(i) for i in range(24))
    folded = value_html(list(range(25)))
    assert folded.startswith("<details><summary>25 values</summary>")


def test_value_html_depth_limit() -> None:
    assert value_html({"k": 1}, 6) == "<code>{&quot;k&quot;: 1}</code>"
    assert value_html({"k": 1}, 5) == '<table class="kv"><tbody><tr><th>k</th><td>1</td></tr></tbody></table>'


def test_table_html_right_aligns_numbers_only() -> None:
    table = Table(["h<"], [[Cell(3), Cell(True), Cell("t&")]])
    doc = table_html(table)
    assert '<td class="num">3</td>' in doc
    assert "<th>h&lt;</th>" in doc
    assert re.search(r"<td>[^<]*</td><td>t&amp;</td>", doc)  # the bool cell is not numeric


def test_simple_table_numeric_columns() -> None:
    doc = simple_table(["a", "b"], [[1, "x<"]], numeric=(0,))
    assert '<tr><td class="num">1</td><td>x&lt;</td></tr>' in doc


# --- html_report / html_records -------------------------------------------------------------------------------
def _rec(label: str):
    return make_record([make_result("pgd", [1, 0, 1, 1], eps=0.3)], label=label)


def test_subtitle_counts_records_and_lists_each_data_set_once() -> None:
    one = _subtitle([_rec("a")], None)
    assert one.startswith("1 record · ")
    two = _subtitle([_rec("a"), _rec("b")], None)
    assert two.startswith("2 records · ")
    assert two.count("n=4") == 1


def test_title_ellipsis_only_after_six_models() -> None:
    six = build_report([_rec(f"m{i}") for i in range(6)])
    assert "<title>kwta-robust: m0, m1, m2, m3, m4, m5</title>" in six
    seven = build_report([_rec(f"m{i}") for i in range(7)])
    assert "<title>kwta-robust: m0, m1, m2, m3, m4, m5 …</title>" in seven


def test_report_path_replaces_the_suffix() -> None:
    assert report_path_for("out/eval-1.json") == Path("out/eval-1.html")


def test_eps_axis_starts_at_clean() -> None:
    axis = _eps_axis([_rec("a")], "linf")
    assert axis.ticks[0] == (0.0, "0")
    assert [x for x, _ in axis.ticks] == [0.0, 0.3]


def _tied() -> object:
    # a breaks sample 0, b (later) breaks sample 1: one each, samples 2 and 3 robust to both
    return make_record([make_result("a", [0, 1, 1, 1], eps=0.3, position=0),
                        make_result("b", [0, 0, 1, 1], eps=0.3, position=1)])


def test_worst_case_row_names_the_first_attack_on_a_tie() -> None:
    body = worst_case_section([_tied()]).body
    assert ("<td>Linf 0.3</td><td class=\"num\"><b>50.0 (15.0–85.0)</b></td><td class=\"num\">2/4</td>"
            "<td class=\"num\">75.0 (30.0–95.5)</td><td>a</td><td>a</td><td>2, 3</td>") in body


def test_model_chart_draws_the_worst_case_thick_and_provenance_interval() -> None:
    rec = _tied()
    chart = _model_chart(rec, "linf", {"a": "#111112", "b": "#111113"}, _eps_axis([rec], "linf"))
    assert chart is not None and 'stroke="#111111" stroke-width="4"' in chart
    assert "<th>interval</th><td>95% wilson</td>" in provenance_section([rec]).body


def _sweep() -> SweepRun:
    records = []
    for i, (ratio, sparsity, flags) in enumerate([(1.0, 0.0, [1, 1, 1, 0]), (0.25, 0.0, [1, 0, 0, 0])]):
        rec = make_record([make_result("pgd", flags, eps=0.3)], label=f"cell{i}")
        rec.model["sweep_cell"] = {"kwta_ratio": ratio, "weight_sparsity": sparsity, "pruning_method": "magnitude"}
        records.append(rec)
    return SweepRun(Path("grid"), "grid", records=records)


def test_sweep_heatmaps_curves_and_section_order() -> None:
    body = sweep_section(_sweep()).body
    assert f'fill="{heat_colour(0.75)}"' in body  # cell0: 3/4 robust, coloured by its accuracy
    assert "robust accuracy (%)</text>" in body and "clean accuracy (%)</text>" in body
    assert '<circle cx="52" ' in body  # the clean accuracy is the eps-0 point, at the plot's left edge
    page = build_report([], sweep=_sweep())
    assert re.findall(r'<section id="([^"]+)"', page)[:3] == ["overview", "table", "sweep"]


# --- plots helpers --------------------------------------------------------------------------------------------
def test_slug_and_line_colours() -> None:
    assert slug("--PGD(steps=5)--") == "pgd-steps-5"
    assert slug("8/255") == "8-255"
    cmap = colormaps["viridis"]
    assert line_colours(3) == [cmap(0.0), cmap(0.425), cmap(0.85)]
    assert line_colours(1) == [cmap(0.0)]


def test_plots_heatmap_scale_text_and_ink() -> None:
    records = []
    for i, (ratio, flags) in enumerate([(1.0, [1, 1, 1, 0, 0]), (0.25, [1, 0, 0, 0, 0])]):
        rec = make_record([make_result("pgd", flags, eps=0.3)], label=f"cell{i}")
        rec.model["sweep_cell"] = {"kwta_ratio": ratio, "weight_sparsity": 0.0, "pruning_method": "magnitude"}
        records.append(rec)
    m = next(m for m in build_matrices(records, title="") if m.norm == "linf")
    ax = heatmap_figure(m).axes[0]
    assert ax.images[0].get_clim() == (0.0, 100.0)
    texts = {t.get_text(): t.get_color() for t in ax.texts}
    # 3/5 = 60 %: Wilson 95 % interval [23.0, 88.3]; 60 % is the first accuracy written in black
    assert texts["60.0\n[23.0, 88.3]"] == "black"
    assert texts["20.0\n[3.6, 62.5]"] == "white"  # rounded outward (outward50)
