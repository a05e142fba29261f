"""How numbers are written for people: percentages with halves rounded up (as papers round them) and plain
numbers with every integer digit from 1,000 up (no scientific notation there; below 1e-4 :func:`number_text`
writes ``1.234e-05``). Every table, chart, tooltip, log line and flag message of the package writes
its percentages with :func:`percent_text`, so one count never reads as two numbers in two places, and the bounds of
every 95% interval it shows in % with :func:`interval_percent_texts`: rounded outward (the lower bound down, the upper
up), so a printed interval is never narrower than the computed one — one rule for an accuracy's Wilson interval, an
expected accuracy's, a noise level's and the noise score per image and level alike. The machine-readable tables
(CSV, JSON) round nothing for reading; they give a computed number to :data:`TABLE_DIGITS` significant digits
(:func:`table_number`) and a percentage of counts from the counts (:func:`percent_of`)."""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any, Callable


#: Significant digits of a number CSV and JSON tables compute in floating point (a percentage, an interval bound, a
#: mean such as a noise score, a p-value; :func:`table_number`): far below any precision printed (0.1 points) and far
#: above a float's noise (about 1e-16 of the value), so one quantity always has the same digits there, however it
#: was computed.
TABLE_DIGITS = 12


def table_number(v: float) -> float:
    """A computed number as CSV and JSON tables give it: ``v`` to :data:`TABLE_DIGITS` significant digits, still a
    float (NaN and infinity as they are). Float noise goes: ``100 * (22 / 40)`` is 55.00000000000001 and is ``55.0``
    here, and a paired interval's bounds -x and +x computed in two orders (…646 and …664 in their last digits) read
    as one number with two signs."""
    return float(f"{v:.{TABLE_DIGITS}g}") if math.isfinite(v) else v


def percent_of(correct: int, n: int) -> float:
    """``correct`` of ``n`` in %, computed from the counts (``n > 0``): ``100 * correct / n`` is exact where the
    percentage is (22 of 40 is 55.0), where ``100 * (correct / n)`` carries the fraction's rounding into it
    (55.00000000000001)."""
    return 100 * correct / n


def count_text(n: int, noun: str) -> str:
    """``n`` and ``noun`` in its number, ``1 draw`` and ``3 draws``: one form in every line (``1 draws`` in one
    table and ``1 draw(s)`` in another read as two counts)."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def percent_text(v: float, digits: int = 1) -> str:
    """A fraction as a percentage without the sign, halves rounded up as papers do: ``0.875`` → ``87.5``,
    ``27/48`` (56.25%) → ``56.3`` (Python's format would print ``56.2``: it rounds exact halves to even)."""
    if not math.isfinite(v) or abs(v) >= 1e12:  # no fraction is that large; the quantize below would need more
        return f"{100.0 * v:.{digits}f}"       # than Decimal's 28 digits from about 1e22 (InvalidOperation)
    return str(_percent_decimal(v).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _percent_decimal(v: float) -> Decimal:
    """``100 · v`` to 10 decimals, the guard against float noise before any rounding to 0.1: a value that is a
    multiple of 0.1 up to the noise of computing it counts as one (14.499999999999998 is 14.5 and rounds up to
    nearest; ``100 · 0.07`` is 7.000000000000001 and stays ``7.0`` rounded up, not ``7.1``; ``100 · 0.57`` is
    56.99999999999999 and stays ``57.0`` rounded down, not ``56.9``). Kept on purpose for the bounds rounded outward
    too, at a known price: a bound within 5e-11 points of a multiple of 0.1 is written as that multiple, so it may
    read up to 5e-11 points narrower than the float computed (the float's own error there is about 1e-14 points) —
    nine orders below the 0.1 shown and far below what the interval's approximation (Wilson's coverage, the t
    interval's) means, while without it a bound on the grid would move a whole 0.1 point outward on float noise
    alone. A bound farther from the grid is floored or ceiled exactly."""
    return Decimal(f"{100.0 * v:.10f}")


def lower_bound_percent_text(v: float, digits: int = 1) -> str:
    """A lower confidence bound as a percentage, rounded down (float noise first, as in :func:`percent_text`), so
    the text never claims more than the bound: 0.10364 → ``10.3``, where :func:`percent_text` writes ``10.4``, and
    0.01971 → ``1.9``, not a ``2.0`` that reads as reaching a margin of 2.0 the bound is under."""
    if not math.isfinite(v) or abs(v) >= 1e12:
        return percent_text(v, digits)
    return str(_percent_decimal(v).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_FLOOR))


def upper_bound_percent_text(v: float, digits: int = 1) -> str:
    """An upper confidence bound as a percentage, rounded up (float noise first, as in :func:`percent_text`): the
    mirror of :func:`lower_bound_percent_text`, so a bound pair written with both is never narrower than computed
    (0.73214 → ``73.3``, where :func:`percent_text` writes ``73.2``)."""
    if not math.isfinite(v) or abs(v) >= 1e12:
        return percent_text(v, digits)
    return str(_percent_decimal(v).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_CEILING))


def interval_percent_texts(low: float, high: float, digits: int = 1) -> tuple[str, str]:
    """A 95% interval's bounds (fractions) as percentages rounded outward, the one rule of every interval the package
    prints in % (Markdown, LaTeX, terminal, HTML tables and tooltips, plot labels, notes): the lower bound down
    (:func:`lower_bound_percent_text`), the upper up (:func:`upper_bound_percent_text`), so the text is never narrower
    than the interval computed (up to :func:`_percent_decimal`'s float-noise guard). The Wilson interval of 135/200,
    0.60732–0.73608, is ``60.7``–``73.7`` (to nearest ``73.6``, which claims more than the interval does); records
    and the CSV / JSON columns keep the exact fractions."""
    return lower_bound_percent_text(low, digits), upper_bound_percent_text(high, digits)


def _half_up(v: float, quantum: Decimal) -> Decimal:
    """``v`` rounded to a multiple of ``quantum``, halves away from zero (float noise first, as in
    :func:`percent_text`)."""
    return Decimal(f"{v:.12g}").quantize(quantum, rounding=ROUND_HALF_UP)


def number_text(v: float) -> str:
    """A plain number for a table: 4 significant digits below 1,000 (``0.1234``, ``12.35``), every integer digit
    above (a noise score ``100685``, never ``1.007e+05``); halves rounded up as in :func:`percent_text` (a noise
    score of 378.25 over four draws is ``378.3``, where Python's format writes ``378.2``)."""
    if not math.isfinite(v):
        return f"{v:.4g}"
    if abs(v) >= 1000:
        return f"{v:.0f}" if v == round(v) else str(_half_up(v, Decimal("0.1")))
    if v == 0:
        return "0"
    exponent = Decimal(f"{v:.12g}").adjusted()
    rounded = _half_up(v, Decimal(1).scaleb(exponent - 3))
    return f"{float(rounded):.4g}"  # the digits are exact now: .4g only drops trailing zeros (12.50 -> 12.5)


def p_value_text(p: float) -> str:
    """A p-value for a table: ``< 1e-6``, two significant digits below 0.01, two decimals above, halves rounded up
    (an exact McNemar p is a dyadic fraction, often a tie at two decimals: 0.125 is ``0.13``, 0.625 ``0.63``,
    where Python's format writes ``0.12`` and ``0.62``; 0.00048828125 is ``0.00049``)."""
    if not math.isfinite(p):
        return f"{p}"
    if p < 1e-6:
        return "< 1e-6"
    if p < 0.01:
        return f"{float(_half_up(p, Decimal(1).scaleb(Decimal(f'{p:.12g}').adjusted() - 1))):.2g}"
    return str(_half_up(p, Decimal("0.01")))


def signed_percent_text(v: float, digits: int = 1) -> str:
    """A difference of fractions in points with its sign: ``+2.5``, ``-2.5``, and ``0.0`` for anything that rounds
    to zero (never ``+0.0`` or ``-0.0``)."""
    text = percent_text(v, digits)
    if Decimal(text) == 0:
        return percent_text(0.0, digits)
    return ("+" if v > 0 else "") + text


def bound_number_text(v: float, upper: bool, places: int = 2) -> str:
    """An interval's bound that is no percentage (a noise score's mean per-sample difference) to ``places`` decimals,
    rounded outward as :func:`interval_percent_texts` rounds bounds in %: a lower bound down, an upper bound up
    (``2.4637`` as a lower bound is ``2.46``, as an upper ``2.47``); ``0.00`` for zero (never ``-0.00``). Float noise
    within 1e-10 of the grid counts as on it (:func:`_percent_decimal`'s guard)."""
    exact = Decimal(f"{v:.{places + 8}f}")  # float noise first, as _percent_decimal (1e-10 at two places)
    rounded = exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_CEILING if upper else ROUND_FLOOR)
    return f"{0:.{places}f}" if rounded == 0 else f"{rounded}"


def signed_number_text(v: float, places: int = 2) -> str:
    """A signed difference that is no percentage (a noise score's mean per-sample difference) to ``places``
    decimals, halves away from zero as in :func:`percent_text` (0.125 is ``+0.13``): ``+0.25``, ``-0.25``, and
    ``0.00`` for anything that rounds to zero (never ``+0.00`` or ``-0.00``)."""
    rounded = _half_up(v, Decimal(1).scaleb(-places))
    return f"{0:.{places}f}" if rounded == 0 else f"{rounded:+}"


def setting_value_text(value: Any, other: Callable[[Any], str] = str) -> str:
    """A setting's value as the protocol tables and the paired notes write it: a float as ``:g`` (``0.1``,
    ``1e-05``), a list or tuple as one value in brackets, its items written the same way (``[0.02, 0.1]``), any
    other value as ``other`` writes it (``str``; ``table --protocol``: ``true``, ``none``, a mapping in
    parentheses). One implementation for :mod:`kwta_robust.protocol` and :mod:`kwta_robust.paired`."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(setting_value_text(v, other) for v in value) + "]"
    return other(value)
