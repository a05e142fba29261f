"""The robustness matrices' figures: the rows' axis label (HTML and PNG heatmaps) and the robust-vs-eps curves.

* The heatmaps labelled their rows ``kWTA k/N`` even where a row is the ReLU twin (no top-k gate); they now say
  ``activation (kWTA k/N; 1.0 = ReLU twin)`` there, the words of the Markdown matrix's legend and row label.
* The curves told k/N levels apart by colour only (the marker and line style went with the weight sparsity): in
  greyscale, or to a colour-blind reader, two k/N levels at one sparsity were the same line. Now a k/N level has its
  own marker shape too (PNG: matplotlib's line artists; HTML: the SVG's point markers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kwta_robust.html_sweep import _curves, _heatmap
from kwta_robust.matrix import CLEAN, DENSE, build_matrices, clean_matrix, matrices_by_point
from kwta_robust import plots
from kwta_robust.plots import heatmap_figure
from test_matrix import cell_record


def _records(with_relu: bool = True) -> list:
    records = [cell_record(0.1, 0.0, DENSE, {0.1: 9, 0.3: 8}), cell_record(0.2, 0.0, DENSE, {0.1: 7, 0.3: 5}),
               cell_record(0.1, 0.8, "magnitude", {0.1: 8, 0.3: 7}, measured=0.8),
               cell_record(0.2, 0.8, "magnitude", {0.1: 6, 0.3: 4}, measured=0.8)]
    if with_relu:
        records += [cell_record(1.0, 0.0, DENSE, {0.1: 6, 0.3: 1}),
                    cell_record(1.0, 0.8, "magnitude", {0.1: 5, 0.3: 0}, measured=0.8)]
    return records


def test_the_heatmaps_row_axis_names_the_relu_twin_where_a_row_is_it() -> None:
    with_relu = next(m for m in build_matrices(_records()) if m.metric == CLEAN)
    only_kwta = next(m for m in build_matrices(_records(with_relu=False)) if m.metric == CLEAN)
    assert heatmap_figure(with_relu).axes[0].get_ylabel() == "activation (kWTA k/N; 1.0 = ReLU twin)"
    assert heatmap_figure(only_kwta).axes[0].get_ylabel() == "kWTA k/N"
    assert ">activation (kWTA k/N; 1.0 = ReLU twin)<" in _heatmap(with_relu)
    assert ">kWTA k/N<" in _heatmap(only_kwta) and "ReLU" not in _heatmap(only_kwta)


def _group():
    matrices = build_matrices(_records())
    (key, group), = [(k, g) for k, g in matrices_by_point(matrices).items() if k[0] == "pgd"]
    return group, clean_matrix(matrices, key[2])


def test_the_png_curves_tell_every_line_apart_without_colour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group, clean = _group()
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or path)  # the figure the PNG is made of
    plots.eps_curves(group, clean, tmp_path / "curves.png")
    figure, = saved
    styles = {}
    for container in figure.axes[0].containers:  # one errorbar per cell: its data line carries the style
        line = container.lines[0]
        styles[container.get_label()] = (line.get_marker(), line.get_linestyle())
    assert len(styles) == 6  # 3 k/N x 2 sparsities
    assert len(set(styles.values())) == 6  # no two lines alike in greyscale
    for ratio in ("1.0 (ReLU twin)", "0.2", "0.1"):  # a k/N level keeps one marker across sparsities
        assert len({styles[f"k/N={ratio}, s={s}"][0] for s in ("0", "0.8")}) == 1
    assert len({styles[f"k/N={r}, s=0"][0] for r in ("1.0 (ReLU twin)", "0.2", "0.1")}) == 3
    assert plots.eps_curves_figure(group, clean).axes[0].containers[0].lines[0].get_marker() == "o"  # the same


def test_the_html_curves_give_each_k_n_level_its_own_point_marker() -> None:
    group, clean = _group()
    svg = _curves(group, clean)
    shapes = {"circle": len(re.findall(r"<circle ", svg)), "square": len(re.findall(r"<rect [^>]*fill=\"#", svg)),
              "triangle": len(re.findall(r"<polygon points=\"[\d.]+,[\d.]+ [\d.]+,[\d.]+ [\d.]+,[\d.]+\" fill=\"#",
                                         svg))}
    # 3 points per line (clean, 0.1, 0.3), 2 lines per k/N level, plus one legend marker per line
    assert shapes == {"circle": 8, "square": 8, "triangle": 8}
