"""Text from a shared file (a record's label, an attack's label, a flag's message, a path) made visible before it
reaches a terminal, an HTML page, a Markdown, LaTeX or CSV table.

Escaping for each format (:mod:`kwta_robust.html`, :mod:`kwta_robust.md_text`, :mod:`kwta_robust.formats`) stops
markup, but two kinds of characters pass every format's escape unchanged and act on what a reader sees:

* control characters: a terminal runs ``ESC`` sequences (``\\x1b[1A\\x1b[2K`` moves up and erases the line above:
  the table printed by ``kwta-robust table`` could show other numbers than the record holds), ``NUL`` and ``BEL``
  stop LaTeX and are invisible elsewhere;
* the Unicode bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069; "Trojan Source",
  CVE-2021-42574): a label ending in U+202E (right-to-left override) shows the text after it reversed, so a tooltip
  ``kwta: 52.0%`` reads ``kwta: %0.25``.

Each such character is written as its Python escape (``\\x1b``, ``\\u202e``), so a reader sees that it is there and
the project's own text, which holds none, keeps its bytes. Tab, line feed and carriage return are left to each
format, which already writes line breaks as spaces where they would break a row.
"""

from __future__ import annotations

import re

#: C0 controls but tab, line feed and carriage return; DEL and the C1 controls; the bidirectional controls.
HIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with each control and bidirectional control character (:data:`HIDDEN`) as its Python escape
    (``"a\\x1b[2Jb"`` → ``"a\\\\x1b[2Jb"``); text without one is returned unchanged."""
    return HIDDEN.sub(_escape, text) if HIDDEN.search(text) else text
