"""Where two JSON values differ: the one walk behind the resume check's first differing attack setting
(:func:`kwta_robust.resume.first_difference`), ``kwta-robust diff``'s list of fields
(:func:`kwta_robust.record_diff.record_differences`) and the tables' check of attack settings
(:mod:`kwta_robust.comparability`).

:func:`json_differences` yields ``(path, a, b)`` for every place the values differ, in the order of the first
value's keys, then the second's: ``path`` as ``inner[2].steps``, :data:`ABSENT` for a key one side lacks, and lists
of different lengths as one difference (the lists). Its callers differ in two rules, which are its options: whether
JSON's ``true`` equals ``1`` (for ``diff`` it does, for attack settings not) and whether two objects without a key
in common are one difference (the objects: an attack's settings replaced by another's) or one per key. The config
hash's ``json.dumps`` tells ``10`` from ``10.0``: ``strict_number`` makes them differ too, so a hash that changed
names its key.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterator

#: Stands for a key one side does not have.
ABSENT: Any = object()


def json_differences(a: Any, b: Any, path: str = "", *, skip: Callable[[str], bool] | None = None,
                     strict_bool: bool = False, whole_disjoint: bool = False,
                     strict_number: bool = False) -> Iterator[tuple[str, Any, Any]]:
    """Every place the JSON values ``a`` and ``b`` differ, as ``(path, a's value, b's value)`` (see the module
    docstring); ``path`` prefixes every path.

    Args:
        skip: paths not compared (nor anything below them), e.g. the volatile fields of a record.
        strict_bool: ``true`` differs from ``1`` (and ``false`` from ``0``); else Python's ``==`` decides.
        whole_disjoint: two non-empty objects without a key in common are one difference at ``path``, not one per
            key.
        strict_number: an integer differs from the equal float (``10`` from ``10.0``), as JSON text does.
    """
    if skip is not None and skip(path):
        return
    if isinstance(a, dict) and isinstance(b, dict) and (not whole_disjoint or set(a) & set(b) or not a or not b):
        for key in [*a, *(k for k in b if k not in a)]:
            yield from json_differences(a.get(key, ABSENT), b.get(key, ABSENT), f"{path}.{key}" if path else str(key),
                                        skip=skip, strict_bool=strict_bool, whole_disjoint=whole_disjoint,
                                        strict_number=strict_number)
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (u, v) in enumerate(zip(a, b)):
            yield from json_differences(u, v, f"{path}[{i}]", skip=skip, strict_bool=strict_bool,
                                        whole_disjoint=whole_disjoint, strict_number=strict_number)
        return
    same = a == b and (not strict_bool or isinstance(a, bool) == isinstance(b, bool)) \
        and (not strict_number or isinstance(a, float) == isinstance(b, float))
    if not same and not _both_nan(a, b):
        yield path, a, b


def _both_nan(a: Any, b: Any) -> bool:
    """Whether both values are NaN (a JSON writer that allows it, e.g. ``json.dumps``): the same value, though
    ``NaN != NaN`` (a record with a NaN field is the same result as itself)."""
    return all(isinstance(v, float) and math.isnan(v) for v in (a, b))


def value_text(value: Any) -> str:
    """A setting as messages write it: text as it is, anything else as JSON, ``(none)`` for :data:`ABSENT`."""
    if value is ABSENT:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value)
