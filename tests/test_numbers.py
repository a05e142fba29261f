"""One count, one number: every percentage the package writes (tables, heatmaps, tooltips, PNG plots, log lines,
flag messages) rounds halves up through :func:`kwta_robust.numbers.percent_text`. 15 of 48 is 31.25%: 31.3
everywhere (Python's ``f"{31.25:.1f}"`` writes 31.2, which the sweep heatmap, its tooltips and the PNG heatmaps
printed next to a table saying 31.3)."""

from __future__ import annotations

import re
from pathlib import Path

from kwta_robust.html_sweep import _heatmap
from kwta_robust.matrix import RobustnessMatrix
from kwta_robust.numbers import percent_text
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
