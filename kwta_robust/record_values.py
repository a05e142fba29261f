"""Strict reading of an evaluation record file: what is wrong with its JSON text (:func:`json_problem`) and the
numbers its loader converts (counts, accuracies, per-sample flags and margins, the schema version and interval
settings).

The loader used to convert with ``int(...)`` and ``float(...)``, which read a hand-edited ``"0.5"`` (a string) as
the number 0.5, ``true`` as 1 and a flag of ``0.7`` as 0: a record that says something else than a number rendered
as if it held one. Here a value of the wrong type is a :class:`FieldError` naming its field path
(``results[2].robust.accuracy``), which :meth:`~kwta_robust.results.EvalRecord.from_dict` reports as one
:class:`~kwta_robust.results.RecordError` line with the file's name. A valid record (ints where it writes ints,
numbers or ``null`` where it writes floats) reads exactly as before.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import reprlib
from typing import Any, Mapping

from kwta_robust.errors import is_whole_number

_NUMBER_TYPES = frozenset((int, float, type(None)))
#: The end of a text cut inside a number (``0.``, ``1e-``: the decoder reads ``0`` and stops at ``.``) or a literal
#: (``tru``), or nothing: where a record cut short stops.
_PARTIAL_TOKEN = re.compile(r"[-+.eE0-9]*|t(?:r(?:ue?)?)?|f(?:a(?:l(?:se?)?)?)?|n(?:u(?:ll?)?)?")


class FieldError(ValueError):
    """A record field of the wrong type or shape; the message starts with the field's path."""


class _ShortRepr(reprlib.Repr):
    """``reprlib``'s bounded ``repr`` (about 40 characters a value, 6 entries a list, 6 levels deep: a damaged list
    of 10,000 margins or a nesting 500 deep is not one line to read) whose ints never pass Python's int-to-str limit
    (4,300 digits): a longer one is said by its number of digits, not converted (``repr`` raised ``ValueError``)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxlong = self.maxother = 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() <= _REPR_INT_BITS:
            try:
                return super().repr_int(x, level)
            except ValueError:  # past the int-to-str limit (4,301 digits, or a limit lowered by the user)
                pass
        return f"<{'a negative' if x < 0 else 'an'} integer of {_digits(abs(x)):,} digits>"


#: Ints of more bits (>= 2**14285 > 10**4300) have more than 4,300 digits, Python's default int-to-str limit (a
#: record's JSON holds none): :func:`_digits` counts them, unconverted (the few of 14,285 bits past it too).
_REPR_INT_BITS = 14_285


def _digits(x: int) -> int:
    """The number of decimal digits of ``x`` > 0, without converting it to text."""
    digits = int((x.bit_length() - 1) * math.log10(2)) + 1  # x >= 2**(bits - 1): this many, or one more
    return digits + (x >= 10 ** digits) - (x < 10 ** (digits - 1))  # the float's rounding, either way


def shown(value: Any) -> str:
    """``value`` for a one-line message about a record field (``..., got 'x'``): its ``repr`` cut to about 40
    characters, a list to its first 6 entries, nesting past 6 levels as ``...``; NaN and infinity as Python writes
    them; an int past 4,300 digits as its number of digits. The one rendering of :mod:`kwta_robust.record_values`
    and :mod:`kwta_robust.record_sections` (each had its own; one raised ``ValueError`` on a 5,000-digit int)."""
    return _ShortRepr().repr(value)


#: The most characters of a record's text (an attack label, an eps as written) that a one-line message quotes.
TEXT_WIDTH = 100


def shown_text(text: Any, quoted: bool = False) -> str:
    """``text`` (a record's attack label, norm or eps as written) for a one-line message: as it is (its ``repr``
    with ``quoted``) up to :data:`TEXT_WIDTH` characters, else its first ones, ``...`` and its length (a hand-edited
    100 kB label made a 100 kB error line)."""
    text = str(text)
    start = text[:TEXT_WIDTH]
    shown_start = repr(start) if quoted else start
    return shown_start if len(text) <= TEXT_WIDTH else f"{shown_start}... ({len(text):,} characters)"


def json_problem(exc: json.JSONDecodeError) -> str:
    """What is wrong with a record file's text, for ``"PATH is not valid JSON (...)"``: a file cut short (a killed copy,
    a full disk) said as such, else where the text breaks; with the fix either way (the decoder's bare ``Expecting
    value`` named neither)."""
    doc, fix = exc.doc, "restore it from a copy or re-run the evaluation that wrote it"
    if not doc.strip():
        return f"the file is empty; {fix}"
    if doc.startswith("\ufeff"):
        return "it starts with a UTF-8 byte-order mark; save it as UTF-8 without one"
    if cut_short(exc):
        return f"{exc.msg}: the text ends before the record does, so the file was cut short; {fix}"
    return f"{exc.msg} at line {exc.lineno} column {exc.colno}; correct it there, or {fix}"


def cut_short(exc: json.JSONDecodeError) -> bool:
    """Whether the JSON text of ``exc`` (not empty) ends before its value does: a file cut short by a killed copy or a
    full disk, which :func:`json_problem` and a resumed run (:func:`kwta_robust.resume.prior_record`) word alike."""
    doc = exc.doc
    rest = doc[exc.pos:].rstrip()  # what the decoder stopped at: nothing, or a number or literal it could not finish
    return bool(doc.strip()) and (_PARTIAL_TOKEN.fullmatch(rest) is not None or exc.msg.startswith("Unterminated "
                                                                                                     "string"))


def entry(data: Any, key: str, where: str) -> Any:
    """``data[key]`` of the JSON object ``data`` (at ``where``), or a :class:`FieldError` naming what is missing."""
    if not isinstance(data, Mapping):
        raise FieldError(f"{where} must be a JSON object, got {shown(data)}")
    if key not in data:
        raise FieldError(f"{where} lacks field {key!r}; restore it from the original record (or re-run the evaluation)")
    return data[key]


def integer(value: Any, where: str) -> int:
    """``value`` if it is a JSON integer (not ``true``/``false``, not ``1.0``, not a string)."""
    if not is_whole_number(value):
        raise FieldError(f"{where} must be an integer, got {shown(value)}")
    return int(value)


def real(value: Any, where: str, nullable: bool = True) -> float:
    """``value`` as a float if it is a JSON number (``null``, where ``nullable``, as NaN: "not measured")."""
    if value is None and nullable:
        return math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an int past float range
            pass
    raise FieldError(f"{where} must be a number{' or null' if nullable else ''}, got {shown(value)}")


def text(value: Any, where: str) -> str:
    """``value`` if it is a JSON string (``str(None)`` made a null config hash the text ``"None"``)."""
    if not isinstance(value, str):
        raise FieldError(f"{where} must be a string, got {shown(value)}")
    return value


def integers(values: Any, where: str) -> list[int]:
    """A list of JSON integers (per-sample flags), checked as a whole first (10,000 samples a list)."""
    if not isinstance(values, list):
        raise FieldError(f"{where} must be a list, got {shown(values)}")
    if set(map(type, values)) <= {int}:
        return list(values)
    return [integer(v, f"{where}[{i}]") for i, v in enumerate(values)]


def reals(values: Any, where: str) -> list[float | None]:
    """A list of JSON numbers or ``null`` (per-sample margins, error rates) as floats and ``None``; ``null`` or an
    absent list (a record written before it was stored) is empty."""
    if values is None:
        return []
    if not isinstance(values, list):
        raise FieldError(f"{where} must be a list, got {shown(values)}")
    if set(map(type, values)) <= _NUMBER_TYPES:
        try:
            return [None if v is None else float(v) for v in values]
        except OverflowError:
            pass  # the loop names the entry
    return [None if v is None else real(v, f"{where}[{i}]", nullable=False) for i, v in enumerate(values)]


def fields_of(cls: type, data: Any, where: str) -> dict:
    """``data``, a JSON object with every field of the dataclass ``cls`` that has no default and no other (else a
    :class:`FieldError` naming ``where``, not a ``TypeError`` about keyword arguments)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(data, dict):
        raise FieldError(f"{where} must be a JSON object, got {type(data).__name__}")
    for name, f in fields.items():
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            entry(data, name, where)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise FieldError(f"{where} has unknown field {shown(unknown[0])}; remove it (or read the record with the "
                         "kwta-robust version that wrote it)")
    return data


#: A JSON escape of a UTF-16 surrogate (``\ud800`` to ``\udfff``): the only way a record's text (UTF-8, which cannot
#: hold a lone surrogate) reads as one, so the walk of :func:`unencodable_field` is needed only where this matches.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def unencodable_field(data: Any) -> str | None:
    """The first field of the loaded JSON ``data`` whose text (or key) UTF-8 cannot encode: a lone surrogate, which
    JSON writes as ``"\\ud800"`` and Python reads, but no table, page or terminal can print (a ``UnicodeEncodeError``
    traceback after the rendering); ``None`` if every text is valid Unicode."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                stack.append((f"{where}.{key}" if where else str(key), key))
                stack.append((f"{where}.{key}" if where else str(key), item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return where.encode("utf-8", "backslashreplace").decode("utf-8")
    return None
