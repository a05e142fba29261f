"""The three chart mutants the report round left alive (session 37): the noise chart's axes, the sweep heatmap's
flag mark, and the lower error bar of the PNG eps curves. Expected values come from the chart geometry and the
Wilson formula written out here, not from the code under test."""

from __future__ import annotations

import math
import re
from pathlib import Path

from matplotlib.axes import Axes

from eval_helpers import make_record, make_result
from kwta_robust.html_records import noise_section
from kwta_robust.html_sweep import sweep_section
from kwta_robust.matrix import build_matrices
from kwta_robust.plots import eps_curves
from kwta_robust.results import Flag, NoiseResult
from test_html_mutants import _sweep

CIRCLE = re.compile(r'<circle cx="([0-9.]+)" cy="([0-9.]+)" r="3.2" fill="[^"]+"><title>([^<]+)</title>')


def wilson(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95% Wilson score interval, written out (Wilson 1927)."""
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_the_noise_chart_puts_the_level_on_x_and_the_accuracy_on_y() -> None:
    rec = make_record([make_result("pgd", [1, 0, 1, 1], eps=0.3)], label="m")
    rec.noise = [NoiseResult("gaussian", [0.0, 0.5, 1.0], 1, 0,
                             {"accuracy": [0.9, 0.6, 0.2], "num_samples": 10}, 0.1)]
    body = noise_section([rec]).body
    points = {tip: (float(cx), float(cy)) for cx, cy, tip in CIRCLE.findall(body)}
    assert sorted(points) == ["m: noise gaussian level 0.5: 60.0%", "m: noise gaussian level 0: 90.0%",
                              "m: noise gaussian level 1: 20.0%"]
    # x: the plot spans 52 .. 584 px (600 wide, 52 left, 16 right) over levels 0 .. 1
    assert [points[f"m: noise gaussian level {lv}"][0] for lv in ("0: 90.0%", "0.5: 60.0%", "1: 20.0%")] == [
        52.0, 318.0, 584.0]
    # y: 230 px per 100 %, higher accuracy higher up (a smaller y)
    top = points["m: noise gaussian level 0: 90.0%"][1]
    assert points["m: noise gaussian level 0.5: 60.0%"][1] - top == 0.3 * 230
    assert round(points["m: noise gaussian level 1: 20.0%"][1] - top, 6) == round(0.7 * 230, 6)


def test_a_flagged_sweep_cell_is_marked_on_the_heatmap() -> None:
    run = _sweep()
    run.records[1].diagnostics.append(Flag("adaptive-beats-pgd", "critical", "masked"))
    run.records[0].diagnostics.append(Flag("few-samples", "warning", "only a warning"))
    texts = re.findall(r"<text [^>]*>([^<]*)</text>", sweep_section(run).body)
    assert "25.0 !" in texts  # cell1: 1/4 robust, critical flag
    assert "75.0" in texts and "75.0 !" not in texts  # cell0: a warning is not a critical flag


def test_eps_curves_draw_the_wilson_interval_below_and_above_each_point(tmp_path: Path, monkeypatch) -> None:
    records = []
    for i, (ratio, flags) in enumerate([(1.0, [1, 1, 1, 0, 0]), (0.25, [1, 0, 0, 0, 0])]):
        rec = make_record([make_result("pgd", flags, eps=0.3)], label=f"cell{i}")
        rec.model["sweep_cell"] = {"kwta_ratio": ratio, "weight_sparsity": 0.0, "pruning_method": "magnitude"}
        records.append(rec)
    matrices = build_matrices(records, title="")
    group = [m for m in matrices if m.metric == "pgd"]
    clean = next(m for m in matrices if m.metric == "clean")
    drawn = []
    original = Axes.errorbar

    def spy(self, x, y, *args, **kwargs):
        drawn.append((list(x), list(y), [list(side) for side in kwargs["yerr"]]))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", spy)
    path = eps_curves(group, clean, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one line per cell: the clean accuracy (5/5) at eps 0, then the robust one at eps 0.3
    by_accuracy = {round(y[1], 6): (x, y, yerr) for x, y, yerr in drawn}
    assert sorted(by_accuracy) == [20.0, 60.0]
    clean_low, _ = wilson(5, 5)
    for correct, accuracy in ((3, 60.0), (1, 20.0)):
        low, high = wilson(correct, 5)
        x, y, (below, above) = by_accuracy[accuracy]
        assert x == [0.0, 0.3] and y[0] == 100.0
        assert math.isclose(below[0], 100 - 100 * clean_low, rel_tol=1e-9) and above[0] == 0.0
        assert math.isclose(below[1], accuracy - 100 * low, rel_tol=1e-9)
        assert math.isclose(above[1], 100 * high - accuracy, rel_tol=1e-9)
    assert round(100 * clean_low, 1) == 56.6  # the interval of 5/5 reaches down to 56.6 %
