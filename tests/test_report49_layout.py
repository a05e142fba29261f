"""The HTML report's layout at 1280 px in headless Chromium (the browser of ``tests/test_report_browser.py``): with
nine models side by side (a 3x3 sweep's cells), a threat point's table of attacks x models wraps its model headers
and scrolls inside its own box where it is wider still (it fits the page: nothing runs past its right edge); it
used to run 350 px past the page's right edge, its last columns cut off. The contents line's links (a sweep's
report has two lines of them) each stay on one line ("Paired" / "comparison" read as two links).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from html_helpers import quickstart_records
from kwta_robust.html_report import write_report
from test_report_browser import headless

#: Appended to a copy of the page (the report itself has no script): every element whose right edge passes the
#: window's width, outside a box that scrolls (``.scroll``), is written into a ``<pre id="overflow">``.
PROBE = """<script>window.addEventListener('load', () => {
  const width = document.documentElement.clientWidth, out = [];
  for (const e of document.querySelectorAll('main *')) {
    const right = e.getBoundingClientRect().right;
    if (right > width + 1 && !e.closest('.scroll')) out.push(e.tagName + '.' + e.className + ' ' + Math.round(right));
  }
  for (const e of document.querySelectorAll('nav a'))  /* a section's link on one line, not split over two */
    if (e.getClientRects().length !== 1) out.push('split ' + e.textContent);
  for (const e of document.querySelectorAll('.tcell th'))  /* a threat table's model names wrap (at a hyphen) */
    if (getComputedStyle(e).whiteSpace !== 'normal') out.push('nowrap ' + e.textContent);
  const pre = document.createElement('pre');
  pre.id = 'overflow';
  pre.textContent = 'width=' + width + ' scroll=' + document.documentElement.scrollWidth + ';' + out.join(';');
  document.body.appendChild(pre);
});</script>"""


def nine_models() -> list:
    kwta, relu = quickstart_records()
    records = []
    for i in range(9):
        rec = copy.deepcopy(kwta if i % 2 else relu)
        rec.model["label"] = f"kwta0.{i + 1}-magnitude0.{9 - i}"  # as long as a sweep cell's label
        records.append(rec)
    return records


def probe(page: Path, tmp_path: Path, width: int) -> list[str]:
    """What :data:`PROBE` finds on ``page`` in a window ``width`` px wide: ``["width=W scroll=S", problems...]``."""
    probed = tmp_path / f"probed-{width}.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = headless(probed, tmp_path / f"profile-{width}", f"--window-size={width},900", "--dump-dom")
    found = re.search(r'<pre id="overflow">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-2000:]
    return found.group(1).split(";")


def test_nine_models_fit_the_page_at_1280_px(tmp_path: Path) -> None:
    page = write_report(tmp_path / "nine.html", nine_models())
    assert probe(page, tmp_path, 1280) == ["width=1280 scroll=1280", ""]


def test_contents_links_stay_whole_where_the_contents_line_wraps(tmp_path: Path) -> None:
    page = write_report(tmp_path / "quickstart.html", quickstart_records())
    found = probe(page, tmp_path, 900)  # its 11 links take two lines at 900 px
    assert [item for item in found if item.startswith("split ")] == [], found
