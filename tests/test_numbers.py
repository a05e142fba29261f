"""One count, one number: every percentage the package writes (tables, heatmaps, tooltips, PNG plots, log lines,
flag messages) rounds halves up through :func:`kwta_robust.numbers.percent_text`. 15 of 48 is 31.25%: 31.3
everywhere (Python's ``f"{31.25:.1f}"`` writes 31.2, which the sweep heatmap, its tooltips and the PNG heatmaps
printed next to a table saying 31.3)."""

from __future__ import annotations

import re
from pathlib import Path

from kwta_robust.html_sweep import _heatmap
from kwta_robust.matrix import RobustnessMatrix
from kwta_robust.numbers import lower_bound_percent_text, percent_text
from kwta_robust.results import Accuracy
from kwta_robust.svg import Segment, stacked_bars

ROOT = Path(__file__).resolve().parents[1]


def test_halves_round_up() -> None:
    assert (percent_text(15 / 48), percent_text(3 / 48), percent_text(27 / 48), percent_text(0.875)) == \
        ("31.3", "6.3", "56.3", "87.5")


def test_the_sweep_heatmap_writes_the_tables_number() -> None:
    m = RobustnessMatrix("clean", None, None, None, "magnitude", [0.05], [0.0],
                         cells={(0.05, 0.0): Accuracy.of(15, 48)}, labels={(0.05, 0.0): "k/N 0.05, dense"})
    svg = _heatmap(m)
    assert ">31.3<" in svg and "31.3% [" in svg and "15/48" in svg
    assert "31.2" not in svg


def test_bar_tooltips_write_the_tables_number() -> None:
    svg = stacked_bars([("model", [Segment("robust", 15, "#0a0"), Segment("broken", 33, "#a00")])], title="t",
                       legend=[])
    assert "15 of 48 (31.3%)" in svg and "33 of 48 (68.8%)" in svg


def test_no_module_formats_a_percentage_itself() -> None:
    """A static guard: ``100 * x`` formatted with a fixed-point spec (``:.1f``, ``%5.1f%%``) outside numbers.py."""
    pattern = re.compile(r"100(?:\.0)?\s*\*[^{}\n]*:\.\d+f\}|%\d*\.\d+f%%")
    found = {str(p.relative_to(ROOT)): pattern.findall(p.read_text(encoding="utf-8"))
             for package in ("kwta_robust", "attacks") for p in (ROOT / package).rglob("*.py")
             if p.name != "numbers.py"}
    assert {path: hits for path, hits in found.items() if hits} == {}


def test_plain_numbers_and_p_values_round_halves_up_too() -> None:
    """The noise score of four draws is a multiple of 0.25: 1513 correct over 4 draws is 378.25, 378.3 (Python's
    ``.4g`` writes 378.2); McNemar's exact p on 0 vs 4 discordant pairs is 2 / 16 = 0.125, 0.13 (``.2f``: 0.12);
    on 1 vs 4, 2 · (1 + 5) / 32 = 0.375, 0.38; a difference that rounds to zero carries no sign."""
    from kwta_robust.numbers import number_text, p_value_text, signed_percent_text

    assert (number_text(1513 / 4), number_text(1514 / 4), number_text(458.0), number_text(100685.0)) == \
        ("378.3", "378.5", "458", "100685")
    assert (number_text(4937 / 4), number_text(0.0), number_text(2 / 3)) == ("1234.3", "0", "0.6667")
    assert (p_value_text(2 / 16), p_value_text(12 / 32), p_value_text(1.0), p_value_text(1e-9)) == \
        ("0.13", "0.38", "1.00", "< 1e-6")
    assert p_value_text(2 / 4096) == "0.00049"  # 0 vs 12 discordant: 2 / 2**12 = 0.000488...
    assert (signed_percent_text(1 / 2500), signed_percent_text(-1 / 2500), signed_percent_text(-0.025),
            signed_percent_text(0.025)) == ("0.0", "0.0", "-2.5", "+2.5")


def test_the_html_noise_table_rounds_like_the_text_tables(tmp_path) -> None:
    """730 of 800 noisy inputs right is 91.25%: the report's per-level column writes 91.3 with one decimal as the
    notes do (``round(91.25, 1)`` is 91.2; it wrote two decimals, 91.63 for 733 of 800, beside one-decimal
    intervals), and the overview's noise score 1513 / 4 = 378.25 reads 378.3 as in the Markdown table."""
    from eval_helpers import make_record
    from kwta_robust.html_report import write_report
    from kwta_robust.results import NoiseResult

    rec = make_record(n=10)
    rec.noise = [NoiseResult("numenta", [0.0, 0.5], 4, 0, {"noise_score": 1513 / 4, "num_samples": 200,
                                                             "accuracy": [0.95, 730 / 800]}, 0.1)]
    page = write_report(tmp_path / "r.html", [rec]).read_text(encoding="utf-8")
    assert "95.0, 91.3<" in page and "91.2" not in page and "91.25" not in page
    assert ">378.3<" in page and ">378.2<" not in page  # the noise table beside it keeps every digit: 378.25


def test_lower_bounds_are_rounded_down_past_float_noise() -> None:
    """A lower bound printed at its nearest tenth could claim more than it bounds (10.36 as 10.4); rounded down it
    never does, and float noise does not take a whole tenth off (0.29 is 28.999999999999996 percent in floats)."""
    assert [lower_bound_percent_text(v) for v in (0.1036431, 0.01971, 0.29, 0.02, 0.0, 0.99999)] == \
        ["10.3", "1.9", "29.0", "2.0", "0.0", "99.9"]
    assert [percent_text(v) for v in (0.1036431, 0.01971)] == ["10.4", "2.0"]
