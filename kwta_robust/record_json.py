"""Records as JSON, fast: the bytes ``json.dumps(record.to_dict(), indent=1, allow_nan=False)`` writes, in time
linear in the record and, with a :class:`RecordEncoder`, in the units added since the last save.

A record holds per-sample lists (flags, margins, error rates, first-broken-by: one entry per sample and unit), so
at 10,000 samples × 20 units it is about 400,000 numbers. The standard library encodes with ``indent`` in pure
Python, one generator step per number, and ``dataclasses.asdict`` deep-copies every number first: 1–2 s a save
at that size, and the runner saves after every unit, so a run spent O(units² · N) writing its record (86 s of a
97 s profile of 20 FGSM units on 10,000 samples). Here

* :func:`plain` turns a record (dataclasses, dicts, lists) into JSON values in one pass, non-finite floats as
  ``None`` (what ``dataclasses.asdict`` followed by ``_nan_to_none`` gave), without copying immutable leaves;
* :func:`dumps` encodes JSON values exactly as ``json.dumps(value, indent=1, allow_nan=False)`` does, a list of
  numbers (and strings) by the C encoder in one call; anything unusual (a non-string key, a type JSON lacks) goes to
  ``json.dumps`` itself, so errors and odd cases are the standard library's;
* :class:`RecordEncoder` keeps the text of every attack result, worst case and noise probe it encoded (the runner
  never changes one once it is in the record: :meth:`~kwta_robust.results.EvalRecord.put_result` replaces it), so
  a save encodes only what is new and joins the rest.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from json.encoder import encode_basestring_ascii
from typing import Any

_INDENT = " "
#: The record's list fields whose items are kept encoded between saves (each item is immutable once added).
CACHED_LISTS: tuple[str, ...] = ("results", "sanity", "worst_case", "noise")
_SCALARS = frozenset((int, float, bool, str, type(None)))


def plain(value: Any) -> Any:
    """``value`` as JSON values: dataclasses as dicts (fields in order), tuples as lists, non-finite floats as
    ``None``; the same as ``_nan_to_none(dataclasses.asdict(value))`` without deep-copying numbers and strings."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if kind is list or kind is tuple:
        types = set(map(type, value))
        if types <= _SCALARS:  # per-sample lists: no call per item
            if float not in types:
                return list(value)
            return [v if type(v) is not float or math.isfinite(v) else None for v in value]
        return [plain(v) for v in value]
    if kind is dict:
        return {k: plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return copy.deepcopy(value)


def _scalar_list(values: list, level: int) -> str | None:
    """``values`` encoded at ``level`` if every item is a plain ``int``, ``float``, ``bool``, ``str`` or ``None``
    (else ``None``): the C encoder with the indented item separator, which writes such items as the indenting
    encoder does."""
    if not set(map(type, values)) <= _SCALARS:
        return None
    pad = "\n" + _INDENT * (level + 1)
    inner = json.dumps(values, allow_nan=False, separators=("," + pad, ": "))
    return "[" + pad + inner[1:-1] + "\n" + _INDENT * level + "]"


def _fallback(value: Any, level: int) -> str:
    """``json.dumps`` of ``value`` as it appears ``level`` levels deep (its lines indented to that level)."""
    return json.dumps(value, indent=1, allow_nan=False).replace("\n", "\n" + _INDENT * level)


def dumps(value: Any, level: int = 0) -> str:
    """``json.dumps(value, indent=1, allow_nan=False)`` for JSON values (``level``: the nesting depth at which
    ``value`` appears, for embedding the text in an enclosing document)."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is list or kind is tuple:
        if not value:
            return "[]"
        text = _scalar_list(value, level)
        if text is not None:
            return text
        pad = "\n" + _INDENT * (level + 1)
        return "[" + pad + ("," + pad).join(dumps(v, level + 1) for v in value) + "\n" + _INDENT * level + "]"
    if kind is dict:
        if not value:
            return "{}"
        if any(type(k) is not str for k in value):
            return _fallback(value, level)
        pad = "\n" + _INDENT * (level + 1)
        items = [encode_basestring_ascii(k) + ": " + dumps(v, level + 1) for k, v in value.items()]
        return "{" + pad + ("," + pad).join(items) + "\n" + _INDENT * level + "}"
    if kind in _SCALARS:
        return json.dumps(value, allow_nan=False)
    return _fallback(value, level)


class RecordEncoder:
    """Encodes records as :func:`dumps` of their ``to_dict()``, keeping the text of the items of
    :data:`CACHED_LISTS` (by identity: an item is never changed once in a record) for the next call."""

    def __init__(self) -> None:
        self._texts: dict[int, tuple[Any, str]] = {}  # id(item) -> (item, its text): the item kept alive

    def _item(self, item: Any, level: int) -> str:
        kept = self._texts.get(id(item))
        if kept is not None and kept[0] is item:
            return kept[1]
        text = dumps(plain(item), level)
        self._texts[id(item)] = (item, text)
        return text

    def encode(self, record: Any) -> str:
        """The JSON text of ``record`` (an :class:`~kwta_robust.results.EvalRecord`), without a final newline."""
        pad = "\n" + _INDENT
        items, live = [], set()
        for f in dataclasses.fields(record):
            value = getattr(record, f.name)
            if f.name in CACHED_LISTS and type(value) is list:
                if value:
                    inner = "\n" + _INDENT * 2
                    texts = [self._item(v, 2) for v in value]
                    live.update(id(v) for v in value)
                    text = "[" + inner + ("," + inner).join(texts) + pad + "]"
                else:
                    text = "[]"
            else:
                text = dumps(plain(value), 1)
            items.append(encode_basestring_ascii(f.name) + ": " + text)
        self._texts = {k: v for k, v in self._texts.items() if k in live}  # items no longer in the record: dropped
        return "{" + pad + ("," + pad).join(items) + "\n}"
