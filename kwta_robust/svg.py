"""Hand-written SVG charts for the HTML report (:mod:`kwta_robust.html`): line charts with 95 % interval bands,
horizontal stacked bars and annotated heatmaps.

Why not matplotlib's SVG backend: these charts go *inline* into one HTML page, so they must be small, carry no
document-wide ``id`` attributes (two charts would collide), keep their text as text (the page is searchable and a
test can read the numbers from the DOM) and be byte-for-byte deterministic (no timestamps, no random ids, fixed
number formatting). Every text from a record passes through :func:`esc`.

Coordinates are SVG user units; every chart has a ``viewBox`` and scales to its container's width.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

from matplotlib import colormaps

from kwta_robust.numbers import percent_text
from kwta_robust.visible_text import visible

#: Tableau 10 without its green (green marks "robust" in the cascade bars), then three of matplotlib's tab10
#: (cyan, brown, olive).
PALETTE: tuple[str, ...] = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
                            "#bab0ac", "#17becf", "#8c564b", "#bcbd22")
WORST_COLOUR = "#111111"
ROBUST_COLOUR = "#a6d96a"
CLEAN_WRONG_COLOUR = "#d0d0d0"
DASHES: tuple[str, ...] = ("", "6 3", "2 3", "8 3 2 3")
#: Point marker shapes of a :class:`Series` (told apart without colour: colour-blind readers, greyscale print).
MARKER_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
FONT = "font-family=\"DejaVu Sans, Arial, sans-serif\""
HEATMAP_CMAP = "viridis"


def esc(text: object) -> str:
    """Escape any value for SVG/HTML text and attribute values (control and bidirectional control characters as
    escapes: :func:`~kwta_robust.visible_text.visible`)."""
    return escape(visible(str(text)), quote=True)


def num(value: float) -> str:
    """A coordinate with at most two decimals, without trailing zeros (deterministic and compact)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def colour(index: int) -> str:
    """The palette's colour number ``index`` (cycling)."""
    return PALETTE[index % len(PALETTE)]


@dataclass
class Point:
    """One point of a series: ``x``, ``y`` (a fraction in [0, 1] shown in %), optional interval and tooltip."""

    x: float
    y: float
    low: float | None = None
    high: float | None = None
    tip: str = ""


@dataclass
class Series:
    """One line of a chart: its name, points and stroke."""
    name: str
    points: list[Point]
    colour: str = PALETTE[0]
    dash: str = ""
    width: float = 1.8
    marker: str = "circle"  # one of MARKER_SHAPES: drawn at every point and in the legend


@dataclass
class Axis:
    """An x axis: its label and the tick positions with their texts (e.g. epsilons as the field writes them)."""

    label: str
    ticks: list[tuple[float, str]] = field(default_factory=list)


def _svg(width: float, height: float, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {num(width)} {num(height)}" role="img" '
            f'aria-label="{esc(label)}" class="chart" {FONT} font-size="11">' + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: float | None = None, weight: str = "",
          fill: str = "#222", rotate: bool = False) -> str:
    attrs = f'x="{num(x)}" y="{num(y)}" text-anchor="{anchor}" fill="{fill}"'
    if size is not None:
        attrs += f' font-size="{num(size)}"'
    if weight:
        attrs += f' font-weight="{weight}"'
    if rotate:
        attrs += f' transform="rotate(-90 {num(x)} {num(y)})"'
    return f"<text {attrs}>{esc(text)}</text>"


def _title(title: str, width: float) -> tuple[list[str], float]:
    """The chart title, bold and centred, wrapped to the chart's width; returns the elements and the height used."""
    lines = textwrap.wrap(title, max(20, int(width / 7.2))) or [""]
    return [_text(width / 2, 16 + 15 * i, line, anchor="middle", size=12, weight="bold")
            for i, line in enumerate(lines)], 15.0 * len(lines)


def marker_element(shape: str, x: float, y: float, colour: str, inner: str = "", size: float = 3.2) -> str:
    """One point marker of ``shape`` (:data:`MARKER_SHAPES`; another: a circle) centred on ``(x, y)``, ``inner``
    (e.g. a ``<title>``) inside it."""
    if shape == "square":
        return (f'<rect x="{num(x - size)}" y="{num(y - size)}" width="{num(2 * size)}" height="{num(2 * size)}" '
                f'fill="{colour}">{inner}</rect>')
    if shape in ("triangle", "diamond"):
        r = size * 1.3
        corners = ([(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)] if shape == "triangle" else
                   [(x, y - r), (x + r, y), (x, y + r), (x - r, y)])
        points = " ".join(f"{num(a)},{num(b)}" for a, b in corners)
        return f'<polygon points="{points}" fill="{colour}">{inner}</polygon>'
    return f'<circle cx="{num(x)}" cy="{num(y)}" r="{num(size)}" fill="{colour}">{inner}</circle>'


def _legend(entries: Sequence[tuple[str, str, str, float, str]], x0: float, y0: float, width: float,
            column: float = 210.0, markers: Sequence[str] = ()) -> tuple[list[str], float]:
    """Legend rows below a chart: ``(name, colour, dash, stroke width, kind)`` with kind ``line`` or ``box``
    (``markers``: per entry, the point marker drawn on its line; none where not given);
    returns the elements and the height used."""
    per_row = max(1, int(width // column))
    out: list[str] = []
    for i, (name, col, dash, stroke, kind) in enumerate(entries):
        x, y = x0 + (i % per_row) * column, y0 + (i // per_row) * 16
        if kind == "box":
            out.append(f'<rect x="{num(x)}" y="{num(y - 9)}" width="18" height="10" fill="{col}" stroke="#666" '
                       'stroke-width="0.5"/>')
        else:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<line x1="{num(x)}" y1="{num(y - 4)}" x2="{num(x + 18)}" y2="{num(y - 4)}" stroke="{col}" '
                       f'stroke-width="{num(stroke)}"{dash_attr}/>')
            if i < len(markers):
                out.append(marker_element(markers[i], x + 9, y - 4, col))
        label = name if len(name) <= 32 else name[:31] + "…"
        out.append(f"<g><title>{esc(name)}</title>{_text(x + 24, y, label)}</g>")
    rows = (len(entries) + per_row - 1) // per_row
    return out, rows * 16


def line_chart(series: Sequence[Series], *, title: str, x_axis: Axis, y_label: str = "accuracy (%)",
               width: float = 600.0, plot_height: float = 230.0) -> str:
    """Lines over ``x`` with a translucent band for each point's interval; y is a fraction drawn as 0–100 %.

    Markers carry a ``<title>`` tooltip (``Point.tip``). The x range spans the ticks and the data.
    """
    body, used_top = _title(title, width)
    left, right, top = 52.0, 16.0, used_top + 12.0
    plot_w = width - left - right
    xs = [p.x for s in series for p in s.points] + [t[0] for t in x_axis.ticks]
    x_min, x_max = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x_max <= x_min:
        x_max = x_min + 1.0

    def sx(x: float) -> float:
        return left + (x - x_min) / (x_max - x_min) * plot_w

    def sy(y: float) -> float:
        return top + (1.0 - y) * plot_height

    for pct in (0, 25, 50, 75, 100):
        y = sy(pct / 100)
        body.append(f'<line x1="{num(left)}" y1="{num(y)}" x2="{num(left + plot_w)}" y2="{num(y)}" stroke="#e3e3e3"/>')
        body.append(_text(left - 6, y + 4, str(pct), anchor="end", fill="#555"))
    bottom = top + plot_height
    body.append(f'<line x1="{num(left)}" y1="{num(bottom)}" x2="{num(left + plot_w)}" y2="{num(bottom)}" '
                'stroke="#888"/>')
    last_label = -math.inf
    for x, label in sorted(x_axis.ticks):
        px = sx(x)
        body.append(f'<line x1="{num(px)}" y1="{num(bottom)}" x2="{num(px)}" y2="{num(bottom + 4)}" stroke="#888"/>')
        if px - last_label >= 34:  # skip a label that would overlap the previous one
            body.append(_text(px, bottom + 16, label, anchor="middle", fill="#555"))
            last_label = px
    body.append(_text(left + plot_w / 2, bottom + 32, x_axis.label, anchor="middle"))
    body.append(_text(14, top + plot_height / 2, y_label, anchor="middle", rotate=True))
    for s in series:
        pts = sorted(s.points, key=lambda p: p.x)
        band = [p for p in pts if p.low is not None and p.high is not None]
        if len(band) >= 2:
            upper = " ".join(f"{num(sx(p.x))},{num(sy(p.high))}" for p in band)  # type: ignore[arg-type]
            lower = " ".join(f"{num(sx(p.x))},{num(sy(p.low))}" for p in reversed(band))  # type: ignore[arg-type]
            body.append(f'<polygon points="{upper} {lower}" fill="{s.colour}" fill-opacity="0.12" stroke="none"/>')
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        if len(pts) >= 2:
            path = " ".join(f"{num(sx(p.x))},{num(sy(p.y))}" for p in pts)
            body.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="{num(s.width)}"'
                        f'{dash}/>')
        for p in pts:
            tip = f"<title>{esc(p.tip)}</title>" if p.tip else ""
            body.append(marker_element(s.marker, sx(p.x), sy(p.y), s.colour, tip))
    legend, used = _legend([(s.name, s.colour, s.dash, s.width, "line") for s in series], left, bottom + 52, plot_w,
                           markers=[s.marker for s in series] if any(s.marker != "circle" for s in series) else ())
    body += legend
    return _svg(width, bottom + 52 + used, body, title)


@dataclass
class Segment:
    """One part of a stacked bar: its name, count and colour."""
    name: str
    count: int
    colour: str


def stacked_bars(bars: Sequence[tuple[str, Sequence[Segment]]], *, title: str, legend: Sequence[Segment],
                 width: float = 600.0) -> str:
    """Horizontal bars, one per ``(label, segments)``, each segment as wide as its share of the bar's total;
    counts written inside segments wide enough for them, every segment with a tooltip."""
    body, used_top = _title(title, width)
    left, right, top, bar_h, gap = 90.0, 16.0, used_top + 14.0, 26.0, 10.0
    plot_w = width - left - right
    y = top
    for label, segments in bars:
        total = sum(s.count for s in segments)
        body.append(_text(left - 6, y + bar_h / 2 + 4, label, anchor="end"))
        x = left
        for s in segments:
            if s.count <= 0 or total <= 0:
                continue
            w = s.count / total * plot_w
            share = percent_text(s.count / total)
            body.append(f'<g><title>{esc(f"{label}: {s.name}: {s.count} of {total} ({share}%)")}</title>'
                        f'<rect x="{num(x)}" y="{num(y)}" width="{num(w)}" height="{num(bar_h)}" fill="{s.colour}" '
                        'stroke="#fff" stroke-width="0.8"/>')
            if w >= 8 * len(str(s.count)) + 4:
                body.append(_text(x + w / 2, y + bar_h / 2 + 4, str(s.count), anchor="middle", fill="#111"))
            body.append("</g>")
            x += w
        y += bar_h + gap
    entries = [(s.name, s.colour, "", 1.0, "box") for s in legend]
    items, used = _legend(entries, left, y + 10, plot_w)
    body += items
    return _svg(width, y + 14 + used, body, title)


def heat_colour(value: float) -> str:
    """``value`` in [0, 1] on the viridis colour map, as ``#rrggbb``."""
    r, g, b, _ = colormaps[HEATMAP_CMAP](min(1.0, max(0.0, value)))
    return f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"


@dataclass
class HeatCell:
    """A heatmap cell: ``value`` in [0, 1] (``None`` = missing), its two text lines and a tooltip."""

    value: float | None
    text: str = "—"
    subtext: str = ""
    tip: str = ""


def heatmap(cells: Sequence[Sequence[HeatCell]], *, rows: Sequence[str], columns: Sequence[str], title: str,
            x_label: str, y_label: str, colour_label: str = "accuracy (%)") -> str:
    """An annotated heatmap, colour scale fixed to 0–100 % (so heatmaps compare), with a discrete colour bar."""
    cell_w, cell_h = 104.0, 46.0
    grid_w, grid_h = cell_w * len(columns), cell_h * len(rows)
    width = max(122.0 + grid_w + 90.0, 520.0)
    left = (width - grid_w - 90.0 + 122.0) / 2  # the grid centred, its row labels to the left
    body, used_top = _title(title, width)
    top = used_top + 14.0
    for i, row in enumerate(cells):
        y = top + i * cell_h
        for j, cell in enumerate(row):
            x = left + j * cell_w
            fill = "#e0e0e0" if cell.value is None else heat_colour(cell.value)
            ink = "#111" if cell.value is None or cell.value >= 0.6 else "#fff"
            tip = f"<title>{esc(cell.tip)}</title>" if cell.tip else ""
            body.append(f'<g>{tip}<rect x="{num(x)}" y="{num(y)}" width="{num(cell_w)}" height="{num(cell_h)}" '
                        f'fill="{fill}" stroke="#fff"/>')
            body.append(_text(x + cell_w / 2, y + 20, cell.text, anchor="middle", fill=ink, weight="bold"))
            if cell.subtext:
                body.append(_text(x + cell_w / 2, y + 35, cell.subtext, anchor="middle", fill=ink, size=9.5))
            body.append("</g>")
    for i, label in enumerate(rows):
        body.append(_text(left - 6, top + i * cell_h + cell_h / 2 + 4, label, anchor="end"))
    for j, label in enumerate(columns):
        body.append(_text(left + j * cell_w + cell_w / 2, top + grid_h + 15, label, anchor="middle"))
    body.append(_text(left + grid_w / 2, top + grid_h + 32, x_label, anchor="middle"))
    body.append(_text(left - 108, top + grid_h / 2, y_label, anchor="middle", rotate=True))
    bar_x, steps = left + grid_w + 18, 20
    bar_h = max(grid_h, 100.0)
    for k in range(steps):
        value = 1.0 - (k + 0.5) / steps
        body.append(f'<rect x="{num(bar_x)}" y="{num(top + k * bar_h / steps)}" width="14" '
                    f'height="{num(bar_h / steps + 0.5)}" fill="{heat_colour(value)}"/>')
    for pct in (0, 50, 100):
        body.append(_text(bar_x + 18, top + (1 - pct / 100) * bar_h + 4, str(pct), fill="#555"))
    body.append(_text(bar_x + 62, top + bar_h / 2, colour_label, anchor="middle", rotate=True, fill="#555"))
    return _svg(width, top + max(grid_h + 40, bar_h + 10), body, title)
