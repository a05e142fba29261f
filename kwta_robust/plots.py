"""Figures of robustness matrices (matplotlib, Agg canvas: no display, no pyplot global state).

* :func:`heatmap` — one PNG per matrix: rows ``k/N`` (1.0 = the ReLU twin), columns weight sparsity, colour and
  text the accuracy in % with its 95 % interval; colour scale fixed to [0, 100] % so heatmaps compare.
* :func:`eps_curves` — robust accuracy vs epsilon, one line per cell (colour and marker: ``k/N``, line style: weight
  sparsity: told apart without colour too), with the clean accuracy at eps = 0 and the 95 % intervals as error bars.
* :func:`write_plots` — both for every matrix (or group of matrices) of a sweep.

Files are written atomically (:func:`kwta_robust.results.atomic_write`). Text from records and configs (a
sweep's name, an attack's label, a pruning method, an eps as written) is drawn as it is (``parse_math=False``): with
two ``$`` matplotlib read it as mathtext, and a label such as ``pgd $\\sqrt$`` stopped the sweep's plots with a
``ValueError``.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Sequence

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kwta_robust.matrix import (
    CLEAN,
    DENSE,
    MARK,
    RobustnessMatrix,
    as_grid,
    clean_matrix,
    describe_cells,
    matrices_by_point,
    method_text,
    ratio_text,
    row_axis_label,
    sparsity_text,
)
from kwta_robust.matrix_flags import is_flagged, mark_meaning
from kwta_robust.numbers import interval_percent_texts, number_text, percent_text
from kwta_robust.report import NORM_TEXT
from kwta_robust.results import atomic_write

logger = logging.getLogger(__name__)

DPI = 120
CMAP = "viridis"
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")


def slug(text: str) -> str:
    """File-name safe text: ``pgd(steps=5)`` → ``pgd-steps-5``, ``8/255`` → ``8-255``."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "x"


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI, bbox_inches="tight"))


def heatmap(m: RobustnessMatrix, path: str | Path) -> Path:
    """Draw ``m`` as an annotated heatmap PNG at ``path`` (:func:`heatmap_figure`)."""
    return _save(heatmap_figure(m), Path(path))


def heatmap_figure(m: RobustnessMatrix) -> Figure:
    """``m`` as an annotated heatmap: per cell its accuracy and 95% interval (a noise matrix: its score and the score
    per image and level in %, colour by the latter), `` !`` after a cell with critical diagnostics flags or an
    upper-bound warning (:mod:`kwta_robust.matrix_flags`) and :data:`~kwta_robust.matrix.MARK` after one not
    comparable with the others, as the Markdown, LaTeX and HTML matrices mark them, with a caption saying so (a
    figure goes into a paper without the legend)."""
    grid = as_grid(m)
    rows, cols = len(m.ratios), len(m.sparsities)
    fig = Figure(figsize=(1.6 + 1.45 * cols, 1.2 + 0.75 * rows))
    ax = fig.add_subplot()
    values = [[100.0 * v if not math.isnan(v) else math.nan for v in row] for row in grid]
    image = ax.imshow(values, cmap=colormaps[CMAP].with_extremes(bad="lightgrey"), vmin=0.0, vmax=100.0, aspect="auto",
                      interpolation="nearest")
    for i, r in enumerate(m.ratios):
        for j, s in enumerate(m.sparsities):
            acc = m.get(r, s)
            if acc is None:  # a lost cell (kwta_robust.sweep_lost) is marked, as in the Markdown and HTML matrices
                text, colour = "—" + (MARK if (r, s) in m.warnings else ""), "black"
            else:
                marks = (" !" if is_flagged(m.flags, m.upper_bounds, (r, s)) else "") + \
                    (MARK if (r, s) in m.warnings else "")
                text = (f"{percent_text(acc.accuracy)}{marks}\n"
                        f"[{', '.join(interval_percent_texts(acc.ci_low, acc.ci_high))}]") if not m.noise else \
                    f"{number_text(acc.correct)}{marks}\n{percent_text(acc.accuracy)}%"  # score; per image and level
                colour = "white" if acc.accuracy < 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(cols), [sparsity_text(s) for s in m.sparsities])
    ax.set_yticks(range(rows), [ratio_text(r) for r in m.ratios])
    ax.set_xlabel("weight sparsity" + method_text(m.pruning_method), parse_math=False)
    ax.set_ylabel(row_axis_label(m.ratios), parse_math=False)
    ax.set_title(m.title, fontsize=9, parse_math=False)
    fig.colorbar(image, ax=ax, label="noise score per image and level (%)" if m.noise else
                 ("clean" if m.metric == CLEAN else "robust") + " accuracy (%)")
    meaning = mark_meaning(m.flags, m.upper_bounds, m.cells)
    caption = [text for marked, text in (
        (meaning is not None, f"! {meaning}"),
        (bool(m.warnings), f"{MARK} not comparable with the other cells"),
    ) if marked]
    if caption:
        fig.text(0.01, 0.01, "; ".join(caption) + ": see the matrices' legend", fontsize=7, ha="left", va="bottom")
        fig.subplots_adjust(bottom=0.22)
    return fig


def eps_curves(group: Sequence[RobustnessMatrix], clean: RobustnessMatrix | None, path: str | Path) -> Path:
    """Robust accuracy vs eps for every cell of ``group`` as a PNG at ``path`` (:func:`eps_curves_figure`)."""
    return _save(eps_curves_figure(group, clean), Path(path))


def eps_curves_figure(group: Sequence[RobustnessMatrix], clean: RobustnessMatrix | None) -> Figure:
    """Robust accuracy vs eps for every cell of ``group`` (one metric, norm and pruning method, eps increasing);
    ``clean`` adds the eps = 0 point. A ``k/N`` level has its colour and marker shape, a weight sparsity its line
    style, so lines are told apart in greyscale and without colour vision."""
    first = group[0]
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    colours = dict(zip(first.ratios, line_colours(len(first.ratios))))
    for r, s in describe_cells(first):
        xs, ys, lo, hi = [], [], [], []
        points = ([(0.0, clean.get(r, s))] if clean is not None else []) + [(m.eps, m.get(r, s)) for m in group]
        for eps, acc in points:
            if acc is None or eps is None:
                continue
            xs.append(eps)
            ys.append(100 * acc.accuracy)
            lo.append(100 * (acc.accuracy - acc.ci_low))
            hi.append(100 * (acc.ci_high - acc.accuracy))
        if not xs:
            continue
        i, j = first.ratios.index(r), first.sparsities.index(s)  # k/N: colour and marker; sparsity: line style
        ax.errorbar(xs, ys, yerr=[lo, hi], color=colours[r], linestyle=LINESTYLES[j % len(LINESTYLES)],
                    marker=MARKERS[i % len(MARKERS)], markersize=4, capsize=2, linewidth=1.2,
                    label=f"k/N={ratio_text(r)}, s={s:g}")
    norm = NORM_TEXT.get(first.norm or "", first.norm or "")
    ax.set_xlabel(f"epsilon ({norm})" + ("; 0 = clean accuracy" if clean is not None else ""), parse_math=False)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    eps_values = ([0.0] if clean is not None else []) + [m.eps for m in group if m.eps is not None]
    ax.set_xticks(eps_values, (["0"] if clean is not None else []) + [m.eps_text or f"{m.eps:g}" for m in group],
                  parse_math=False)
    what = f"{'+' if first.cumulative else ''}{first.metric}"
    method = "no pruning" if first.pruning_method == DENSE else f"{first.pruning_method} pruning"
    ax.set_title(f"{first.title_prefix}{what} robust accuracy vs eps ({method})", fontsize=9, parse_math=False)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(describe_cells(first)) > 6 else 1, loc="best")
    return fig


def line_colours(n: int) -> list:
    """``n`` distinct colours from the :data:`CMAP` colour map (darkest first)."""
    cmap = colormaps[CMAP]
    return [cmap(0.85 * i / max(1, n - 1)) for i in range(n)]


def heatmap_name(m: RobustnessMatrix) -> str:
    """The PNG file name of matrix ``m``'s heatmap."""
    point = "" if m.norm is None else f"_{m.norm}-{slug(m.eps_text or f'{m.eps:g}')}"
    return f"heatmap_{slug(m.metric)}{point}_{slug(m.pruning_method)}.png"


def curves_name(metric: str, norm: str | None, method: str) -> str:
    """The PNG file name of the robust-vs-eps curves of ``metric``, ``norm`` and ``method``."""
    return f"robust_vs_eps_{slug(metric)}_{norm}_{slug(method)}.png"


def write_plots(matrices: Sequence[RobustnessMatrix], out_dir: str | Path) -> list[Path]:
    """A heatmap per matrix and a robust-accuracy-vs-eps plot per (metric, norm, pruning method) in ``out_dir``."""
    out_dir = Path(out_dir)
    paths = [heatmap(m, out_dir / heatmap_name(m)) for m in matrices]
    for (metric, norm, method), group in matrices_by_point(matrices).items():
        paths.append(eps_curves(group, clean_matrix(matrices, method), out_dir / curves_name(metric, norm, method)))
    logger.info("%d plots written to %s", len(paths), out_dir)
    return paths
