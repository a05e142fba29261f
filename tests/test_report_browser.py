"""The HTML report in a real browser: headless Chromium opens the file (no network), a screenshot is taken and
checked non-blank with the charts drawn, and the DOM holds every number of the records' tables.

Chromium is required, never skipped: the README test command and CI install it (``scripts/install-browser.sh``:
Debian's ``chromium``). ``KWTA_REPORT_SCREENSHOT=docs/report.png python -m pytest tests/test_report_browser.py``
also writes the screenshot (palette PNG) that the README shows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from html_helpers import expected_numbers, parse_page, quickstart_records
from kwta_robust.quickstart import TITLE, headline
from kwta_robust.html_report import write_report
from kwta_robust.svg import PALETTE

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1280, 2400)  # the overview, the tables and notes, and the first two rows of charts


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no Chromium found (looked for " + ", ".join(BROWSERS) + "): install it, e.g. on Debian/Ubuntu "
                "`sh scripts/install-browser.sh` (apt-get install chromium; the README test command and CI run it); "
                "the report's browser test is never skipped")


def headless(url: Path, profile: Path, *args: str) -> str:
    """Run headless Chromium on ``url`` with ``args`` (a fresh profile, nothing fetched from the network)."""
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}", *args,
               url.resolve().as_uri()]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _near(pixels: np.ndarray, hex_colour: str, tolerance: int = 12) -> int:
    """How many pixels are within ``tolerance`` of ``hex_colour`` in every channel."""
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(pixels.astype(np.int16) - target) <= tolerance).all(axis=-1).sum())


def test_report_opens_in_chromium_with_charts_and_numbers(tmp_path: Path) -> None:
    records = quickstart_records()
    notes = headline(records)  # the page quickstart writes: its headline heads the overview
    page = write_report(tmp_path / "quickstart.html", records, title=TITLE, notes=notes)
    shot = tmp_path / "shot.png"
    headless(page, tmp_path / "profile-1", f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
    image = Image.open(shot).convert("RGB")
    assert image.size == WINDOW
    pixels = np.asarray(image)
    assert (pixels < 235).any(axis=-1).mean() > 0.08  # not blank: text, tables, charts
    packed = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1].astype(np.int32) << 8) | pixels[..., 2]
    assert len(np.unique(packed)) > 200  # distinct colours
    assert _near(pixels, PALETTE[0]) > 400 and _near(pixels, PALETTE[1]) > 400  # chart lines and bands drawn
    assert _near(pixels, "#22303f", 2) > 20_000  # the header bar

    dom = headless(page, tmp_path / "profile-2", "--dump-dom")
    parsed = parse_page(dom)
    assert parsed.text.startswith(TITLE) and all(note in parsed.text for note in notes)
    for rec in records:
        for number in expected_numbers(rec):
            assert number in parsed.text, (rec.label, number)
        assert rec.diagnostics == [] or all(f.message in parsed.text for f in rec.diagnostics)
    assert sum(1 for tag, _ in parsed.tags if tag == "svg") >= 9

    target = os.environ.get("KWTA_REPORT_SCREENSHOT")
    if target:  # the README's picture: the same screenshot as a small palette PNG
        image.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


def test_labels_stay_text_in_the_browser(tmp_path: Path) -> None:
    kwta, relu = quickstart_records()
    label = '<script>document.title="owned"</script><img src=x onerror="document.title=1">'
    kwta.model["label"] = label
    page = write_report(tmp_path / "evil.html", [kwta, relu])
    dom = headless(page, tmp_path / "profile", "--dump-dom")
    parsed = parse_page(dom)
    assert not any(tag in ("script", "img") for tag, _ in parsed.tags)
    assert label in parsed.text
    assert "<title>owned</title>" not in dom and "<title>1</title>" not in dom  # no handler or script ran
