"""HTML building blocks for the self-contained report (:mod:`kwta_robust.html_report`).

Safety by construction: :func:`el` escapes every child and attribute that is not already :class:`Markup`, so text
taken from a record (a model label, a flag's evidence, a config value) can never inject markup or script. The
page has no script and no external resource: CSS is inline and charts are inline SVG (:mod:`kwta_robust.svg`).

Generic values (:func:`value_html`) render any JSON-like data as nested key/value tables (a list of objects as one
table), so sections other modules add to a record are shown without this module knowing their shape.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from html import escape
from typing import Any, Iterable, Sequence

from kwta_robust.report import Table, cell_text
from kwta_robust.visible_text import visible

#: Lists of plain values longer than this are folded into a ``<details>`` element.
FOLD_AFTER = 24
MAX_DEPTH = 6


class Markup(str):
    """A string of HTML that is safe to insert as is (built by :func:`el` or from escaped text)."""


def esc(value: Any) -> Markup:
    """``value`` as HTML-escaped markup (markup passes unchanged), its control and bidirectional control characters
    written as escapes (:func:`~kwta_robust.visible_text.visible`)."""
    return value if isinstance(value, Markup) else Markup(escape(visible(str(value)), quote=True))


def _children(items: Iterable[Any]) -> str:
    out = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, (list, tuple)):
            out.append(_children(item))
        else:
            out.append(esc(item))
    return "".join(out)


def el(tag: str, *children: Any, **attrs: Any) -> Markup:
    """``<tag attrs>children</tag>``; ``class_`` → ``class``; a ``None``/``False`` attribute is left out, ``True``
    is a bare attribute. Children: text (escaped), :class:`Markup`, ``None`` (skipped) or lists of these."""
    parts = [tag]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        parts.append(name if value is True else f'{name}="{esc(value)}"')
    return Markup(f"<{' '.join(parts)}>{_children(children)}</{tag}>")


def number_text(value: float) -> str:
    """A float for people: six significant digits, ``—`` for NaN."""
    if math.isnan(value):
        return "—"
    return f"{value:.6g}"


def value_html(value: Any, depth: int = 0) -> Markup:
    """Any JSON-like value as HTML: objects as key/value tables, lists of objects as one table, long lists folded."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return el("span", "—", class_="muted")
    if isinstance(value, bool):
        return esc("true" if value else "false")
    if isinstance(value, float):
        return esc(number_text(value))
    if isinstance(value, (int, str)):
        return esc(value)
    if depth >= MAX_DEPTH:
        return el("code", json.dumps(value, default=str, sort_keys=False))
    if isinstance(value, dict):
        if not value:
            return el("span", "(empty)", class_="muted")
        rows = [el("tr", el("th", str(k)), el("td", value_html(v, depth + 1))) for k, v in value.items()]
        return el("table", el("tbody", rows), class_="kv")
    if isinstance(value, (list, tuple)):
        if not value:
            return el("span", "(none)", class_="muted")
        if set(map(type, value)) == {int}:  # sample ids (10,000 of them): digits need no escaping
            text = ", ".join(map(str, value))
        elif all(isinstance(v, dict) for v in value):
            keys: list[str] = []
            for item in value:
                keys += [str(k) for k in item if str(k) not in keys]
            head = el("thead", el("tr", [el("th", k) for k in keys]))
            body = el("tbody", [el("tr", [el("td", value_html(item.get(k), depth + 1)) for k in keys])
                                for item in value])
            return el("table", head, body, class_="data")
        elif all(not isinstance(v, (dict, list, tuple)) for v in value):
            text = ", ".join(str(value_html(v, depth + 1)) for v in value)
        else:
            return el("ul", [el("li", value_html(v, depth + 1)) for v in value])
        if len(value) > FOLD_AFTER:
            return el("details", el("summary", f"{len(value)} values"), el("div", Markup(text), class_="list"))
        return Markup(text)
    return esc(value)


def table_html(table: Table, *, css: str = "data") -> Markup:
    """A :class:`~kwta_robust.report.Table` as an HTML table (same cell texts as the Markdown renderer), its notes
    as a list below. Numeric cells are right-aligned."""
    head = el("thead", el("tr", [el("th", h) for h in table.headers]))
    rows = []
    for row in table.rows:
        cells = []
        for cell in row:
            numeric = cell.percent or (isinstance(cell.value, (int, float)) and not isinstance(cell.value, bool))
            cells.append(el("td", cell_text(cell), class_="num" if numeric else None))
        rows.append(el("tr", cells))
    parts = [el("div", el("table", head, el("tbody", rows), class_=css), class_="scroll")]
    if table.notes:
        parts.append(el("ul", [el("li", n) for n in table.notes], class_="notes"))
    return Markup("".join(parts))


def simple_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric: Sequence[int] = ()) -> Markup:
    """A plain table; ``numeric`` column indices are right-aligned. Cells are :func:`value_html`-rendered."""
    head = el("thead", el("tr", [el("th", h) for h in headers]))
    body = el("tbody", [el("tr", [el("td", value_html(v), class_="num" if i in numeric else None)
                                  for i, v in enumerate(row)]) for row in rows])
    return el("div", el("table", head, body, class_="data"), class_="scroll")


def badge(text: str, kind: str) -> Markup:
    """A ``<span class="badge KIND">`` holding ``text``."""
    return el("span", text, class_=f"badge {kind}")


@dataclass
class Section:
    """One section of the page: anchor ``key``, heading and body."""

    key: str
    title: str
    body: Markup


CSS = """
body{font-family:"DejaVu Sans",Arial,sans-serif;color:#1d1d1f;margin:0;background:#fafafa;\
font-size:14px;line-height:1.45}
main{max-width:1240px;margin:0 auto;padding:18px 24px 40px}
header{background:#22303f;color:#fff;padding:16px 24px}
header h1{margin:0 0 4px;font-size:22px}header p{margin:0;color:#cfd8e3}
nav{max-width:1240px;margin:0 auto;padding:8px 24px 0;font-size:13px}
nav a{margin-right:14px;color:#22507a;white-space:nowrap}
section{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:10px 18px 16px;margin:16px 0}
h2{font-size:18px;margin:6px 0 10px;border-bottom:1px solid #eee;padding-bottom:4px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0}\
th,td{border:1px solid #ddd;padding:3px 7px;vertical-align:top;text-align:left}
table.data th{background:#f1f3f5;white-space:nowrap}\
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv th{background:#f7f7f7;font-weight:normal;color:#444;white-space:nowrap}table.kv{font-size:13px}
.scroll{overflow-x:auto}.notes{font-size:12.5px;color:#444;padding-left:20px}.muted{color:#888}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px}
.charts figure{margin:0;border:1px solid #eee;border-radius:4px;padding:6px}svg.chart{width:100%;height:auto}
.badge{display:inline-block;border-radius:3px;padding:0 6px;margin:1px 3px 1px 0;font-size:12px;font-weight:bold}
.critical{background:#fde2e1;color:#a3121b}.warning{background:#fff1d6;color:#8a5300}\
.info{background:#e8eef5;color:#2b4a6b}
.ok{background:#e3f4e1;color:#23602a}.partial{background:#fff3b0;color:#6b5500}
.flag{border-left:4px solid #ccc;padding:4px 10px;margin:8px 0;background:#fcfcfc;color:inherit}
.flag.critical{border-color:#d62728}.flag.warning{border-color:#ff9f1a}.flag.info{border-color:#7c9cc0}
.flag p{margin:2px 0 4px}.tables{display:flex;flex-wrap:wrap;gap:0 18px}
/* a threat table of many models scrolls in its own box (its headers wrap), not past the page */
.tcell{min-width:0;max-width:100%}.tcell table.data th{white-space:normal}
ul.headline{margin:4px 0 12px;padding-left:20px}ul.headline li{font-weight:bold}figcaption{font-size:12px;color:#444}
.cards{display:flex;flex-wrap:wrap;gap:12px}\
.card{border:1px solid #e2e2e2;border-radius:6px;padding:8px 12px;min-width:260px}
.card h3{margin:2px 0 6px}.big{font-size:20px;font-weight:bold}\
pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:12px}
details summary{cursor:pointer;color:#22507a}.list{font-size:12px;word-break:break-word}
"""


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole document: inline CSS, a header, a contents line and the sections; no script, no external URL."""
    nav = el("nav", [el("a", s.title, href=f"#{s.key}") for s in sections])
    body = [el("section", el("h2", s.title), s.body, id=s.key) for s in sections]
    head = el("head", Markup('<meta charset="utf-8">'),
              Markup('<meta name="viewport" content="width=device-width, initial-scale=1">'),
              el("title", title), el("style", Markup(CSS)))
    doc = el("html", head, el("body", el("header", el("h1", title), el("p", subtitle)), nav, el("main", body)),
             lang="en")
    return "<!DOCTYPE html>\n" + doc + "\n"
