"""One rounding rule for every interval printed in % (outward50): an accuracy's 95% Wilson bounds were rounded to the
nearest 0.1 point while the noise intervals were rounded outward, so a table read up to 0.1 point narrower than its
interval on one bound or both (135/200: 60.732–73.608% printed ``60.7–73.6``). Now every interval in % is rounded
outward, the lower bound down and the upper up, in every format; the accuracy itself stays rounded to nearest and
records keep the exact fractions. A bound within 5e-11 points of a multiple of 0.1 counts as on it (float noise)."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

from eval_helpers import make_record, make_result
from html_helpers import quickstart_records
from kwta_robust.formats import render_records
from kwta_robust.html import table_html
from kwta_robust.html_sweep import _curves, _heatmap
from kwta_robust.matrix import build_matrices
from kwta_robust.noise_ci import interval_text
from kwta_robust.numbers import table_number
from kwta_robust.plots import heatmap_figure
from kwta_robust.report import Cell, budget_check_notes, cell_text, compare_table
from kwta_robust.results import Accuracy, wilson_interval

#: 135 of 200 (the quickstart's pgd at Linf 0.1 on the kWTA model): Wilson 60.732%–73.608%, to nearest ``73.6``.
K, N = 135, 200
OUTWARD = "60.7–73.7"


def _outward(low: float, high: float) -> tuple[str, str]:
    """The bounds (fractions) in %, rounded outward by hand from their exact decimal values."""
    low_d, high_d = Fraction(Decimal(repr(low))) * 1000, Fraction(Decimal(repr(high))) * 1000
    return f"{math.floor(low_d) / 10:.1f}", f"{math.ceil(high_d) / 10:.1f}"


def _sweep_records() -> list:
    """Two sweep cells at Linf 0.3 (3/4 and 1/4 robust): Wilson 30.06–95.44% and 4.56–69.94%."""
    records = []
    for i, (ratio, flags) in enumerate([(1.0, [1, 1, 1, 0]), (0.25, [1, 0, 0, 0])]):
        rec = make_record([make_result("pgd", flags, eps=0.3)], label=f"cell{i}")
        rec.model["sweep_cell"] = {"kwta_ratio": ratio, "weight_sparsity": 0.0, "pruning_method": "magnitude"}
        records.append(rec)
    return records


def test_a_printed_accuracy_interval_is_never_narrower_than_its_wilson_interval() -> None:
    """Over every count at n = 1..40 and 200: the lower bound shown is at most the computed one and the upper at
    least it, each within 0.1 point (to nearest, about half the bounds read inside the interval)."""
    for n in [*range(1, 41), 200]:
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            text = cell_text(Cell.acc(Accuracy.of(k, n)))
            shown_low, shown_high = map(float, text[:-1].split(" (")[1].split("–"))
            assert shown_low <= 100 * low + 5e-11 and shown_high >= 100 * high - 5e-11, (k, n, text)
            assert 100 * low - shown_low < 0.1 and shown_high - 100 * high < 0.1, (k, n, text)
            assert (shown_low, shown_high) == tuple(map(float, _outward(low, high))), (k, n, text)


def test_every_table_format_writes_the_accuracy_interval_outward() -> None:
    record = make_record([make_result("pgd", [1] * K + [0] * (N - K))], label="m")
    low, high = wilson_interval(K, N)
    assert 100 * low > 60.7 and 100 * high > 73.6  # to nearest the upper bound read 73.6, inside the interval
    assert f"| 67.5 ({OUTWARD}) |" in render_records([record], "md")
    assert f"67.5 ({OUTWARD})" in render_records([record], "wide")
    assert r"67.5\,{\scriptsize[60.7, 73.7]}" in render_records([record], "latex")
    assert f"67.5 ({OUTWARD})" in str(table_html(compare_table([record])))
    csv = render_records([record], "csv")  # machine-readable columns keep the bounds, to 12 significant digits
    assert repr(table_number(100 * high)) in csv and repr(table_number(100 * low)) in csv


def test_the_quickstart_table_and_budget_notes_round_outward() -> None:
    kwta, relu = quickstart_records()
    table = render_records([kwta, relu], "md")
    assert "| 94.0 (89.8–96.6) | 67.5 (60.7–73.7) |" in table  # was 89.8–96.5 and 60.7–73.6
    notes = [n for n in budget_check_notes([kwta, relu]) if "lowest robust accuracy" in n]
    assert notes
    for note in notes:
        value, low, high = re.search(r"verified is ([\d.]+)% \(([\d.]+)–([\d.]+)\)", note).groups()
        label = note[1:note.index("]")]
        worst = {r.label: r for r in (kwta, relu)}[label].worst_case[0]
        k = round(float(value) * worst.robust.n / 100)
        assert (low, high) == _outward(*wilson_interval(k, worst.robust.n)), note


def test_the_sweep_heatmaps_and_curves_round_outward() -> None:
    m = next(m for m in build_matrices(_sweep_records(), title="") if m.norm == "linf")
    svg = _heatmap(m)
    assert "[30.0, 95.5]" in svg and "[4.5, 70.0]" in svg  # to nearest 30.1–95.4 and 4.6–69.9
    assert "[30.1, 95.4]" not in svg
    curves = _curves([m], None)
    assert "75.0% [30.0, 95.5]" in curves and "25.0% [4.5, 70.0]" in curves
    texts = [t.get_text() for t in heatmap_figure(m).axes[0].texts]
    assert "75.0\n[30.0, 95.5]" in texts and "25.0\n[4.5, 70.0]" in texts


def test_a_noise_levels_percent_interval_and_an_expected_accuracy_round_outward() -> None:
    low, high = wilson_interval(28, 40)  # 54.57%–81.94%: to nearest 54.6–81.9
    assert interval_text(low, high, percent=True) == "54.5–82.0"
    assert cell_text(Cell(0.7, (0.54571, 0.81939), True)) == "70.0 (54.5–82.0)"  # an expected accuracy's cell


def test_the_guard_against_float_noise_keeps_a_bound_on_the_grid() -> None:
    """100 · 0.07 is 7.000000000000001 and 100 · 0.57 is 56.99999999999999: each is on the 0.1 grid up to float
    noise, so rounding outward leaves it there (not 7.1 and 56.9); a bound 1e-9 points off the grid moves."""
    from kwta_robust.numbers import interval_percent_texts
    assert interval_percent_texts(0.57, 0.07) == ("57.0", "7.0")
    assert interval_percent_texts(0.5699999999, 0.0700000001) == ("56.9", "7.1")
    assert interval_percent_texts(*wilson_interval(0, 10)) == ("0.0", "27.8")
    assert interval_percent_texts(*wilson_interval(10, 10)) == ("72.2", "100.0")
