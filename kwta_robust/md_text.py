"""Text from records in GitHub-flavoured Markdown: backslash escapes where a character would change the rendering.

A record's strings are user-controlled — a model's label, an attack's label from a config or a plug-in, a layer
name, a path, a flag's message — and the Markdown outputs (``table``, ``compare.md``, ``quickstart.md``,
``report --out *.md``) put them in table cells, headings and list items. Before, only ``|`` and line breaks were
handled: a label ``<img src=x onerror=...>`` became raw HTML on GitHub, ``*best*`` italics, ``[x](http://...)`` a
link. A backslash before an ASCII punctuation character is a valid escape in CommonMark and renders as that
character, so escaping changes what a reader sees only where the text would otherwise have been formatted.

Each character is escaped only where it can change the rendering, so the project's own plain text (``kwta_cnn``,
``< 1e-6``, ``Ahmad & Scheinkman``, ``[kwta]`` before a note, a lone ``2.5*eps/steps``) keeps its bytes and a
terminal reader of the ``md`` format sees no backslashes there:

* ``*``, ``~`` and `````` ` `````` where the text holds two or more of that character (emphasis, GFM strikethrough and
  code spans need an opener and a closer; a single one renders as itself);
* ``_`` where two or more of them stand outside a word (``kwta_cnn``'s is intraword, never emphasis);
* ``\\`` before ASCII punctuation, which it would escape (the matrices' ``k/N \\ weight sparsity`` stays);
* ``<`` before a letter, ``/``, ``!`` or ``?`` (raw HTML, autolinks); ``&`` before an entity (``&lt;``, ``&#60;``);
* ``[`` and ``]`` in a text that holds ``](`` or ``][`` (a link, an image, a reference), or that starts as a
  reference definition (``[x]:``) or a GFM task-list box (``[x] ``) where it begins a list item (a definition forms
  only where a block starts: the protocol note's ``[a, b]: a list`` stays);
* at the start of a list item or heading, a leading ``>``, or ``#``, ``-``, ``+``, ``*``, ``1.``/``1)`` followed by a
  space or by another such mark (a nested quote, heading, list or rule; ``-62.0``, ``2.5*eps`` and ``#5`` stay),
  and a closing run of ``#`` that a heading would drop.

Not escaped: bare URLs, which GitHub links whatever precedes them (there is no escape for that).
"""

from __future__ import annotations

import re

from kwta_robust.visible_text import visible

_PAIRED = "*~`"  # each needs an opener and a closer to format anything
_BACKSLASH = re.compile(r"\\(?=[!-/:-@\[-`{-~])")  # before ASCII punctuation: escapable in CommonMark
_HTML = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=(?:[A-Za-z][A-Za-z0-9]*|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});)")
_LINK = re.compile(r"\][(\[]")  # an inline link or image, a full or collapsed reference
_DEFINITION = re.compile(r"\s{0,3}\[[^\]]*\]:")  # a reference definition: only where a block (an item) starts
_TASK_BOX = re.compile(r"\[[ xX]\](?:\s|$)")
_BLOCK_START = re.compile(r"^(\s*)(>|#(?=[\s#]|$)|[+*-](?=[\s+*-]|$))")  # a marker needs a space (or a rule)
_ORDERED = re.compile(r"^(\s*\d{1,9})([.)])(?=\s|$)")
_CLOSING_HASHES = re.compile(r"(\s)(#+\s*)$")
_UNDERSCORES = re.compile(r"_+")


def _outside_words(text: str, match: re.Match[str]) -> bool:
    """Whether the run of ``_`` ``match`` lacks a letter or digit on either side (it could open or close)."""
    before = text[match.start() - 1] if match.start() else " "
    after = text[match.end()] if match.end() < len(text) else " "
    return not (before.isalnum() and after.isalnum())


def _underscores(text: str) -> str:
    runs = [m for m in _UNDERSCORES.finditer(text) if _outside_words(text, m)]
    if sum(len(m.group()) for m in runs) < 2:
        return text
    out, last = [], 0
    for m in runs:
        out += [text[last:m.start()], m.group().replace("_", "\\_")]
        last = m.end()
    return "".join(out + [text[last:]])


def md_escape(text: str, *, block_start: bool = False) -> str:
    """``text`` with its line breaks as spaces and a backslash before each character that would change how
    GitHub-flavoured Markdown renders it (see the module docstring); ``block_start``: the text begins a list item
    or a heading, where a leading ``#``, ``>``, ``-``, ``+``, ``*``, ``1.``, a task-list box or a reference
    definition would be read as structure (and a heading drops a closing ``#`` run). Control and bidirectional
    control characters are written as escapes (:func:`~kwta_robust.visible_text.visible`: a terminal shows this
    text)."""
    text = visible(" ".join(text.splitlines()))
    links = bool(_LINK.search(text)) or (block_start and bool(_TASK_BOX.match(text) or _DEFINITION.match(text)))
    paired = [c for c in _PAIRED if text.count(c) > 1]
    text = _BACKSLASH.sub(r"\\\\", text)  # first: the backslashes added below are not doubled
    for c in paired:
        text = text.replace(c, "\\" + c)
    text = _underscores(text)
    text = _HTML.sub(r"\\<", text)
    text = _ENTITY.sub(r"\\&", text)
    if links:
        text = text.replace("[", "\\[").replace("]", "\\]")
    if block_start:
        text = _BLOCK_START.sub(r"\1\\\2", text, count=1)
        text = _ORDERED.sub(r"\1\\\2", text, count=1)
        text = _CLOSING_HASHES.sub(r"\1\\\2", text, count=1)
    return text


def md_cell(text: str) -> str:
    """Text that neither breaks a Markdown table row nor is formatted in it: :func:`md_escape`, pipes escaped."""
    return md_escape(text).replace("|", "\\|")
