"""A record whose noise accuracy list holds ``null`` (hand-edited or damaged; small49 item 3). A record reads a
``null`` number as "not measured" (NaN) and renders it as ``—``; the per-level matrix and the HTML noise chart
skipped such a level, but the Markdown notes' ``accuracy % per level`` raised ``TypeError`` (``percent_text(None)``),
so ``table`` and ``report`` crashed on the record. The notes and the HTML noise table now write ``—`` at that level,
its place among the levels kept."""

from __future__ import annotations

import json
import re
from pathlib import Path

from html_helpers import QUICKSTART
from kwta_robust.html_report import build_report
from kwta_robust.noise_notes import other_noise_notes, probe_notes
from kwta_robust.results import load_record


def _damaged(tmp_path: Path, kind: str = "numenta") -> Path:
    data = json.loads((QUICKSTART / "kwta.json").read_text(encoding="utf-8"))
    probe = data["noise"][0]
    probe["kind"] = kind
    probe["result"]["accuracy"][1] = None
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_null_level_reads_as_a_dash_in_the_long_tables_note(tmp_path: Path) -> None:
    record = load_record(_damaged(tmp_path))
    accuracy = record.noise[0].result["accuracy"]
    note, = probe_notes(record)
    per_level = note.split("accuracy % per level (95% interval: Wilson) ", 1)[1].split(" / ")
    assert len(per_level) == len(accuracy) == len(record.noise[0].levels)
    assert per_level[1] == "—" and per_level[0] == "94.0 (89.8–96.6)" and per_level[2] != "—"


def test_a_null_level_reads_as_a_dash_in_the_other_probes_note_and_the_html_table(tmp_path: Path) -> None:
    record = load_record(_damaged(tmp_path, kind="gaussian"))
    note, = other_noise_notes([record])
    assert note.startswith("noise gaussian: ") and " / — / " in note
    html = build_report([record])
    noise = html[html.index('<section id="noise">'):]
    row, = re.findall(r"<tr>(.*?)</tr>", noise[:noise.index("</section>")].split("<tbody>", 1)[1])
    levels = re.findall(r"<td[^>]*>(.*?)</td>", row)[7].split(", ")
    assert len(levels) == len(record.noise[0].levels) and levels[1] == "—"  # before, the level was left out
    assert note.endswith(" / ".join(levels))  # the same texts as the note
